"""The contract every fusion module keeps: ``fusion(sem, gen)`` on two ``[..., N, dim]`` token tensors.

Subclasses implement ``fuse(sem, gen, context)`` and return ``(fused, gate)``; ``gate`` is the weight on
the semantic stream (``1 - gate`` goes to the generative one), or ``None`` for variants that compute no
gate. ``forward`` checks the inputs and drops the gate unless ``return_gate=True``.

``context`` is the instruction context vector of Alg. 1 line 18 (``[*batch, dim]``, see
:mod:`vega3d.fusion.instruction`). Only fusions with ``takes_context = True`` read it; giving it to any
other fusion is an error, so a question that was meant to steer the gate is never dropped silently.

``released_keys`` maps state-dict names of the authors' released module to ours (``{released: ours}``,
whole dotted components): ``load_state_dict`` accepts either spelling, so released checkpoints load as is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Fusion(nn.Module):
    name: str = "fusion"
    #: True when ``fuse`` returns a gate tensor; False means it returns ``None`` for the gate.
    has_gate: bool = False
    #: True when the module reads ``context=`` (the instruction context vector).
    takes_context: bool = False
    #: Released state-dict names -> ours, for names that differ (see the module docstring).
    released_keys: dict[str, str] = {}

    def __init__(self, dim: int, **options: Any) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"fusion {self.name!r}: dim must be a positive integer; got {dim!r}")
        self.dim = dim
        self.options = options
        if self.released_keys:
            self.register_load_state_dict_pre_hook(_rename_released_keys)

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the module: ``build_fusion(**fusion.config())``."""
        return {"name": self.name, "dim": self.dim, **self.options}

    def forward(self, sem: torch.Tensor, gen: torch.Tensor, *, context: torch.Tensor | None = None,
                return_gate: bool = False):
        check_streams(self.name, self.dim, sem, gen)
        if context is not None:
            if not self.takes_context:
                raise ValueError(f"fusion {self.name!r} takes no context; use 'instruction_token_gated' for an "
                                 "instruction-aware gate")
            context = broadcast_context(self.name, self.dim, context, sem)
        fused, gate = self.fuse(sem, gen, context)
        return (fused, gate) if return_gate else fused

    def fuse(self, sem: torch.Tensor, gen: torch.Tensor, context: torch.Tensor | None):
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


def broadcast_context(name: str, dim: int, context: torch.Tensor, sem: torch.Tensor) -> torch.Tensor:
    """``context [*batch, dim]`` viewed as ``[*batch, 1, ..., 1, dim]`` against ``sem [..., N, dim]``.

    ``batch`` must be a prefix of ``sem.shape[:-2]``: for ``sem [B, T, N, D]`` pass ``[B, D]`` (one
    instruction per sample, shared by its frames), ``[B, T, D]`` or ``[D]`` (one for everything).
    """
    if not isinstance(context, torch.Tensor) or not context.is_floating_point():
        raise TypeError(f"fusion {name!r}: context must be a floating torch.Tensor [*batch, {dim}]")
    batch, lead = tuple(context.shape[:-1]), tuple(sem.shape[:-2])
    if context.shape[-1:] != (dim,) or lead[: len(batch)] != batch:
        raise ValueError(f"fusion {name!r}: context must have shape [*batch, {dim}] with batch a prefix of "
                         f"{lead}; got {tuple(context.shape)}")
    return context.to(sem.device, sem.dtype).reshape(*batch, *([1] * (sem.ndim - 1 - len(batch))), dim)


def _rename_released_keys(module: Fusion, state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        local = key[len(prefix):]
        for released, ours in module.released_keys.items():
            if local == released or local.startswith(released + "."):
                renamed = prefix + ours + local[len(released):]
                if renamed not in state_dict:
                    state_dict[renamed] = state_dict.pop(key)
                break
