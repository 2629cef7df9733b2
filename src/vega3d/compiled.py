"""Compiled loops (numba), cached on disk: the decorator every kernel module uses, and ``compile_all``
that ``make install`` runs once so that later processes load them instead of compiling."""

from __future__ import annotations

import warnings

from numba import njit

FAST_MATH = {"reassoc", "contract"}  # lets sums vectorise; NaN and inf still propagate (no "nnan"/"ninf")


def compiled(**options):
    """``numba.njit`` with the compiled code cached on disk (next to the module, or in numba's user cache
    folder, or ``NUMBA_CACHE_DIR``); where none of them is writable, compiled in each process instead
    (seconds on first use), with one warning."""

    def decorate(function):
        try:
            return njit(cache=True, nogil=True, **options)(function)
        except RuntimeError as error:  # numba finds no cache location at decoration time
            if not compiled.warned:
                warnings.warn(f"vega3d: compiled loops cannot be cached ({error}); they are compiled in every "
                              "process. Set NUMBA_CACHE_DIR to a writable folder to cache them.", stacklevel=2)
                compiled.warned = True
            return njit(nogil=True, **options)(function)

    return decorate


compiled.warned = False


def compile_all() -> None:
    """Compile every loop for the argument types vega3d uses (numba caches them), and robosuite's where it
    is installed (see :func:`vega3d.policies.envs.compile_robosuite`)."""
    import importlib.util

    import torch

    from vega3d.analysis.correspondence import correspondence_score
    from vega3d.scenes.geometry import depth_token_coordinates

    features, coords = torch.randn(2, 4, 3), torch.zeros(2, 4, 3)
    for dtype in (torch.float32, torch.float64):
        correspondence_score(features.to(dtype), coords, token_scores=True)
        correspondence_score(features.to(dtype), coords, protocol="adjacent")
    depth = torch.ones(1, 4, 4)
    for ignore_invalid in (False, True):
        depth_token_coordinates(depth, depth > 0, torch.eye(3).numpy(), torch.eye(4)[None], (2, 2), (4, 4), ignore_invalid)
    if importlib.util.find_spec("robosuite") is not None:
        from vega3d.policies.envs import compile_robosuite

        compile_robosuite()
