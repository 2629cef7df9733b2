"""Published weight files read without executing code, and loaded with strict key matching.

The research checkpoints (VGGT, SEVA, Vmem) are single files of flat tensor names: safetensors, or a
PyTorch pickle read with ``torch.load(weights_only=True)`` (tensors and plain containers only; anything
else is refused). ``vega3d convert-weights`` turns a pickle into safetensors once; every loader looks for
that converted file first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class WeightsError(ValueError):
    """A weight file that cannot be read or does not match the architecture; the message names the file."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` of a safetensors file or of a pickled state dict (``weights_only=True``)."""
    from vega3d.models.convert import read_shard  # the package's one code-free weight-file reader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    if path.suffix != ".safetensors" and path.suffix not in PICKLE_SUFFIXES:
        raise WeightsError(f"{path}: unknown weight format (expected .safetensors or a PyTorch pickle {PICKLE_SUFFIXES})")
    try:
        return read_shard(path)
    except ValueError as error:
        raise WeightsError(f"{str(error).splitlines()[0]}; vega3d never unpickles code") from None


def find_weight_file(weights: str | Path, candidates: tuple[str, ...], what: str) -> Path:
    """``weights`` itself when it is a file, else the first of ``candidates`` inside the folder ``weights``,
    or in the local Hugging Face cache when ``weights`` is a hub id (never downloaded here)."""
    path = Path(weights)
    if path.is_file():
        return path
    if path.is_dir():
        for name in candidates:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: no {what} weight file (looked for {', '.join(candidates)})")
    if len(path.parts) == 2 and not path.is_absolute():  # owner/name: a hub id
        from huggingface_hub import try_to_load_from_cache

        for name in candidates:
            cached = try_to_load_from_cache(str(weights), name)
            if isinstance(cached, str):
                return Path(cached)
    raise FileNotFoundError(f"{path}: no such {what} weight file or folder, nor a hub id in the local Hugging Face "
                            f"cache (fetch {' or '.join(candidates)} first, e.g. with `hf download`)")


def hub_snapshot(weights, allow_patterns: list[str], layout: str) -> Path:
    """The local folder of hub id ``weights`` (downloaded where a network allows it), with only the files
    the backbone reads; anything that is neither an existing path nor an ``org/name`` id is an error."""
    path = Path(weights).expanduser()
    if path.exists() or str(weights).startswith((".", "/", "~")) or str(weights).count("/") != 1:
        raise FileNotFoundError(f"weights {weights!r}: no such file or folder (and not a hub id 'org/name')")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(weights), allow_patterns=allow_patterns))
    except Exception as error:  # network, auth, missing repo: all end the same way for the user
        raise FileNotFoundError(f"weights {weights!r}: cannot download from the hub ({type(error).__name__}: {error}); "
                                f"pass a local folder laid out as {layout}") from None


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop ``prefix`` where every key carries it (a ``DataParallel`` ``module.`` save)."""
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: value for key, value in state.items()}
    return state


def _listing(keys, limit: int = 6) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


Convert = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path, what: str,
                to_published: Convert = dict, from_published: Convert = dict) -> torch.nn.Module:
    """Load ``state`` (published names) into ``module``: every tensor of the published layout must be
    present with its shape, and nothing more. ``to_published`` / ``from_published`` map the module's state
    dict to the published one and back (renames, fused tensors). ``module`` may live on the meta device:
    tensors are assigned, not copied."""
    expected = {key: tuple(value.shape) for key, value in to_published(module.state_dict()).items()}
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [f"{key} {tuple(state[key].shape)} != {shape}" for key, shape in expected.items()
              if key in state and tuple(state[key].shape) != shape]
    problems = [f"{len(missing)} missing ({_listing(missing)})" if missing else "",
                f"{len(unexpected)} unexpected ({_listing(unexpected)})" if unexpected else "",
                f"{len(shapes)} of the wrong shape ({_listing(shapes, 3)})" if shapes else ""]
    if any(problems):
        raise WeightsError(f"{path}: the weights do not match {what}: " + "; ".join(p for p in problems if p))
    module.load_state_dict(from_published(state), strict=True, assign=True)
    return module
