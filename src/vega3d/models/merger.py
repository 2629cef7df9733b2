"""Generative projectors: backbone width C -> host width D (the ``generative_projector`` adapter).

``mlp`` is the paper's P_gen (Linear-GELU-Linear, token by token on the merged grid). ``merger`` and
``avg`` are the released spatial-reasoning code's ``generative_merger`` (REFERENCE-SR sections 2-3): they take
the host's *unmerged* patch grid ``[G, H, W, C]`` and merge each 2x2 window, in the same order as
Qwen's own patch merger, so merged token ``(r, c)`` lines up with Qwen's merged token ``(r, c)``:

- ``merger``: RMSNorm over C per patch (fp32 math, eps 1e-6, Qwen's RMSNorm), the window's 4 patches
  concatenated in the order (0,0), (0,1), (1,0), (1,1) with C fastest (4C), Linear(4C -> hidden) ->
  exact GELU -> Linear(hidden -> D);
- ``avg``: the mean over the window, then Linear(C -> hidden) -> GELU -> Linear(hidden -> D).

Module names (``ln_q``, ``mlp.0``, ``mlp.2``) are those of the released checkpoint's ``generative_merger``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from vega3d.fusion import GenerativeProjector
from vega3d.models.settings import PROJECTORS
MERGER_HIDDEN = 4096  # the released generative_merger_hidden_dim


class GenerativeMerger(nn.Module):
    """``[G, H, W, C]`` -> ``[G, (H/m) (W/m), D]``; an odd H or W loses its last row / column."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = MERGER_HIDDEN, mode: str = "merger", window: int = 2):
        super().__init__()
        if mode not in ("merger", "avg"):
            raise ValueError(f"GenerativeMerger: mode must be 'merger' or 'avg'; got {mode!r}")
        for label, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim), ("window", window)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GenerativeMerger: {label} must be a positive integer; got {value!r}")
        self.in_dim, self.mode, self.window = in_dim, mode, window
        if mode == "merger":
            self.ln_q = Qwen2RMSNorm(in_dim, eps=1e-6)
        width = in_dim * window**2 if mode == "merger" else in_dim
        self.mlp = nn.Sequential(nn.Linear(width, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 4 or tokens.shape[-1] != self.in_dim:
            raise ValueError(f"GenerativeMerger: tokens must be [G, H, W, {self.in_dim}]; got {tuple(tokens.shape)}")
        m = self.window
        groups, height, width = tokens.shape[0], tokens.shape[1] // m, tokens.shape[2] // m
        if height == 0 or width == 0:
            raise ValueError(f"GenerativeMerger: a {tokens.shape[1]}x{tokens.shape[2]} grid has no {m}x{m} window")
        windows = tokens[:, : height * m, : width * m].reshape(groups, height, m, width, m, -1).permute(0, 1, 3, 2, 4, 5)
        if self.mode == "merger":
            merged = self.ln_q(windows).reshape(groups, height, width, -1)  # (0,0), (0,1), (1,0), (1,1); C fastest
        else:
            merged = windows.mean(dim=(3, 4))
        return self.mlp(merged).reshape(groups, height * width, -1)


def build_projector(kind: str, in_dim: int, out_dim: int, **options) -> nn.Module:
    """The ``generative_projector`` adapter of kind ``kind`` (one of :data:`PROJECTORS`)."""
    if kind == "mlp":
        if options:
            raise ValueError(f"projector 'mlp' takes no options; got {sorted(options)}")
        return GenerativeProjector(in_dim, out_dim)
    if kind in ("merger", "avg"):
        unknown = sorted(set(options) - {"hidden_dim"})
        if unknown:
            raise ValueError(f"projector {kind!r} takes only the option 'hidden_dim'; got {unknown}")
        return GenerativeMerger(in_dim, out_dim, mode=kind, **options)
    raise ValueError(f"unknown generative projector {kind!r}; choose from {', '.join(PROJECTORS)}")
