"""The generative projector P_gen of Eq. 6: backbone width -> LLM width."""

from __future__ import annotations

import torch
from torch import nn


class GenerativeProjector(nn.Sequential):
    """Linear(in_dim -> out_dim), GELU, Linear(out_dim -> out_dim) (REFERENCE.md, both settings)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        for label, value in (("in_dim", in_dim), ("out_dim", out_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GenerativeProjector: {label} must be a positive integer; got {value!r}")
        super().__init__(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[-1] != self.in_dim:
            raise ValueError(f"GenerativeProjector: tokens must have shape [..., {self.in_dim}]; got {tuple(tokens.shape)}")
        return super().forward(tokens)

    def config(self) -> dict[str, int]:
        return {"in_dim": self.in_dim, "out_dim": self.out_dim}
