"""The contract every fusion module keeps: ``fusion(sem, gen)`` on two ``[..., N, dim]`` token tensors.

Subclasses implement ``fuse(sem, gen, instruction)`` and return ``(fused, gate)``; ``gate`` is the
weight on the semantic stream (``1 - gate`` goes to the generative one), or ``None`` for variants that
compute no gate. ``forward`` checks the inputs and drops the gate unless ``return_gate=True``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Fusion(nn.Module):
    name: str = "fusion"
    #: True when ``fuse`` returns a gate tensor; False means it returns ``None`` for the gate.
    has_gate: bool = False

    def __init__(self, dim: int, **options: Any) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"fusion {self.name!r}: dim must be a positive integer; got {dim!r}")
        self.dim = dim
        self.options = options
        #: Width of the instruction embedding the gate is conditioned on; None = no instruction input.
        self.instruction_dim: int | None = None

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the module: ``build_fusion(**fusion.config())``."""
        return {"name": self.name, "dim": self.dim, **self.options}

    def forward(self, sem: torch.Tensor, gen: torch.Tensor, instruction: torch.Tensor | None = None,
                return_gate: bool = False):
        check_streams(self.name, self.dim, sem, gen)
        if self.instruction_dim is None and instruction is not None:
            raise ValueError(f"fusion {self.name!r} was built without instruction_dim; it takes no instruction")
        if self.instruction_dim is not None and instruction is None:
            raise ValueError(f"fusion {self.name!r} was built with instruction_dim={self.instruction_dim}; "
                             "pass instruction=[..., instruction_dim]")
        fused, gate = self.fuse(sem, gen, instruction)
        return (fused, gate) if return_gate else fused

    def fuse(self, sem: torch.Tensor, gen: torch.Tensor, instruction: torch.Tensor | None):
        raise NotImplementedError


def check_streams(name: str, dim: int, sem: torch.Tensor, gen: torch.Tensor) -> None:
    """Both streams are tensors of one shape ``[..., N, dim]``, dtype and device: never broadcast."""
    for label, tokens in (("sem", sem), ("gen", gen)):
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"fusion {name!r}: {label} must be a torch.Tensor [..., N, {dim}]; got {type(tokens).__name__}")
        if tokens.ndim < 2 or tokens.shape[-1] != dim:
            raise ValueError(f"fusion {name!r}: {label} must have shape [..., N, {dim}]; got {tuple(tokens.shape)}")
    if sem.shape != gen.shape:
        raise ValueError(f"fusion {name!r}: sem and gen must have the same shape [..., N, {dim}]; "
                         f"got sem {tuple(sem.shape)} and gen {tuple(gen.shape)}")
    if sem.dtype != gen.dtype or sem.device != gen.device:
        raise ValueError(f"fusion {name!r}: sem and gen must share dtype and device; "
                         f"got {sem.dtype}/{sem.device} and {gen.dtype}/{gen.device}")
