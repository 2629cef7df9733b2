"""Adaptive gated fusion (paper Sec. 4.3, Eq. 7-8) and the released variants of it (REFERENCE.md).

One scalar gate per token, ``g = sigmoid(w^T [LN(x); LN(y)] + b)``, weighs the semantic stream (g) against
the generative one (1 - g). The presets differ in three facts:

=========== ======================== ===================== ==================================
preset      gate input order          streams that are mixed output
=========== ======================== ===================== ==================================
paper       [LN(F_gen); LN(F_sem)]    raw F_sem, F_gen      g F_sem + (1 - g) F_gen (Eq. 8)
reference   [LN(F_sem); LN(F_gen)]    LN(F_sem), LN(F_gen)  g LN(F_sem) + (1 - g) LN(F_gen)
residual    [LN(F_sem); LN(F_gen)]    raw F_sem, F_gen      F_sem + s (mixed - F_sem), s init 0.2
=========== ======================== ===================== ==================================

The order only decides which half of ``w`` reads which stream (it matters when loading weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vega3d.fusion.base import Fusion


@dataclass(frozen=True)
class GatePreset:
    gen_first: bool  # gate input [LN(gen); LN(sem)] (Eq. 7) instead of [LN(sem); LN(gen)] (released code)
    mix_normalized: bool  # mix the LayerNormed streams instead of the projected ones
    residual_init: float | None  # learnable s of out = sem + s (mixed - sem); None = no residual


PRESETS = {
    "paper": GatePreset(gen_first=True, mix_normalized=False, residual_init=None),
    "reference": GatePreset(gen_first=False, mix_normalized=True, residual_init=None),
    "residual": GatePreset(gen_first=False, mix_normalized=False, residual_init=0.2),
}


class AdaptiveGatedFusion(Fusion):
    """Token-level gate between semantic and generative tokens; ``gate`` has shape ``[..., N]``.

    ``instruction_dim``: condition the gate on the question: ``fusion(sem, gen, instruction=emb)`` with
    ``emb`` of shape ``[*batch, instruction_dim]`` adds ``Linear(emb)`` (one scalar per sample, zero at
    initialisation so training starts from the plain gate) to the gate logit of every token. ``batch``
    must be a prefix of ``sem.shape[:-2]``: ``sem [B, T, N, D]`` takes ``emb [B, C]`` or ``[B, T, C]``.
    """

    name = "gated"
    has_gate = True

    def __init__(self, dim: int, preset: str = "paper", instruction_dim: int | None = None) -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown gated-fusion preset {preset!r}; choose from {', '.join(PRESETS)}")
        super().__init__(dim, preset=preset, instruction_dim=instruction_dim)
        self.preset = PRESETS[preset]
        self.norm_sem = nn.LayerNorm(dim)
        self.norm_gen = nn.LayerNorm(dim)
        self.gate = nn.Linear(2 * dim, 1)
        if self.preset.residual_init is not None:
            self.residual_scale = nn.Parameter(torch.tensor(float(self.preset.residual_init)))
        if instruction_dim is not None:
            if not isinstance(instruction_dim, int) or instruction_dim < 1:
                raise ValueError(f"instruction_dim must be a positive integer; got {instruction_dim!r}")
            self.instruction_dim = instruction_dim
            self.instruction_bias = nn.Linear(instruction_dim, 1)
            nn.init.zeros_(self.instruction_bias.weight)
            nn.init.zeros_(self.instruction_bias.bias)

    def fuse(self, sem, gen, instruction):
        sem_n, gen_n = self.norm_sem(sem), self.norm_gen(gen)
        pair = (gen_n, sem_n) if self.preset.gen_first else (sem_n, gen_n)
        logit = self.gate(torch.cat(pair, dim=-1)).squeeze(-1)
        if instruction is not None:
            logit = logit + self._instruction_logit(instruction, logit.shape)
        gate = torch.sigmoid(logit)
        x, y = (sem_n, gen_n) if self.preset.mix_normalized else (sem, gen)
        mixed = gate[..., None] * x + (1.0 - gate[..., None]) * y
        if self.preset.residual_init is not None:
            mixed = sem + self.residual_scale * (mixed - sem)
        return mixed, gate

    def _instruction_logit(self, instruction: torch.Tensor, logit_shape: torch.Size) -> torch.Tensor:
        batch = tuple(instruction.shape[:-1])
        lead = tuple(logit_shape[:-1])
        if instruction.shape[-1:] != (self.instruction_dim,) or lead[: len(batch)] != batch:
            raise ValueError(f"fusion 'gated': instruction must have shape [*batch, {self.instruction_dim}] with "
                             f"batch a prefix of {lead}; got {tuple(instruction.shape)}")
        bias = self.instruction_bias(instruction.to(self.instruction_bias.weight.dtype)).squeeze(-1)
        return bias.reshape(*batch, *([1] * (len(logit_shape) - len(batch))))
