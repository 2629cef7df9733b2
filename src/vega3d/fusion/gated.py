"""Adaptive gated fusion (paper Sec. 4.3, Eq. 7-8), its released variants and the instruction-aware gate.

One scalar gate per token, ``g = sigmoid(w^T [LN(x); LN(y)] + b)``, weighs the semantic stream (g) against
the generative one (1 - g). The presets differ in three facts:

=========== ======================== ===================== ==================================
preset      gate input order          streams that are mixed output
=========== ======================== ===================== ==================================
paper       [LN(F_gen); LN(F_sem)]    raw F_sem, F_gen      g F_sem + (1 - g) F_gen (Eq. 8)
reference   [LN(F_sem); LN(F_gen)]    LN(F_sem), LN(F_gen)  g LN(F_sem) + (1 - g) LN(F_gen)
residual    [LN(F_sem); LN(F_gen)]    raw F_sem, F_gen      F_sem + s (mixed - F_sem), s init 0.2
=========== ======================== ===================== ==================================

``reference`` is the released ``token_gated`` (3D setting), ``residual`` the released
``token_gated_residual`` (VSI-Bench). The order only decides which half of ``w`` reads which stream (it
matters when loading weights). Released checkpoints name the layers ``norm1`` / ``norm2`` /
``gate_projection.0``; they load directly (``released_keys``).
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
    """Token-level gate between semantic and generative tokens; ``gate`` has shape ``[..., N]``."""

    name = "gated"
    has_gate = True
    released_keys = {"norm1": "norm_sem", "norm2": "norm_gen", "gate_projection.0": "gate"}

    def __init__(self, dim: int, preset: str = "paper") -> None:
        if preset not in PRESETS:
            raise ValueError(f"unknown gated-fusion preset {preset!r}; choose from {', '.join(PRESETS)}")
        super().__init__(dim, preset=preset)
        self.preset = PRESETS[preset]
        self.norm_sem = nn.LayerNorm(dim)
        self.norm_gen = nn.LayerNorm(dim)
        self.gate = nn.Linear(2 * dim, 1)
        if self.preset.residual_init is not None:
            self.residual_scale = nn.Parameter(torch.tensor(float(self.preset.residual_init)))

    def fuse(self, sem, gen, context):
        sem_n, gen_n = self.norm_sem(sem), self.norm_gen(gen)
        pair = (gen_n, sem_n) if self.preset.gen_first else (sem_n, gen_n)
        gate = torch.sigmoid(self.gate(torch.cat(pair, dim=-1)).squeeze(-1) + self.context_logit(context))
        x, y = (sem_n, gen_n) if self.preset.mix_normalized else (sem, gen)
        mixed = gate[..., None] * x + (1.0 - gate[..., None]) * y
        if self.preset.residual_init is not None:
            mixed = sem + self.residual_scale * (mixed - sem)
        return mixed, gate

    def context_logit(self, context: torch.Tensor | None) -> torch.Tensor | float:
        """What the instruction adds to every token's gate logit (nothing for the plain gate)."""
        return 0.0


class InstructionGatedFusion(AdaptiveGatedFusion):
    """The released instruction-aware token gate (``instruction_token_gated``, Alg. 1 line 18).

    The gate logit gains a fixed ``gate_bias`` (-0.5, also without a context) and, with
    ``fusion(sem, gen, context=c)``, ``context_scale * MLP(LN(c))`` (MLP: Linear(dim -> dim/2), SiLU,
    Linear(dim/2 -> 1)): one scalar per sample, added to all of its tokens. ``preset`` picks the token
    gate it conditions; ``reference`` (the default) is the released one. ``gate_projection`` is a plain
    Linear in the released module (no Sigmoid inside), hence its own key table.
    """

    name = "instruction_token_gated"
    takes_context = True
    released_keys = {"norm1": "norm_sem", "norm2": "norm_gen", "gate_projection": "gate"}

    def __init__(self, dim: int, preset: str = "reference", context_scale: float = 1.0, gate_bias: float = -0.5) -> None:
        if dim % 2:
            raise ValueError(f"fusion 'instruction_token_gated': dim must be even (context MLP dim -> dim/2); got {dim}")
        super().__init__(dim, preset=preset)
        self.options.update(context_scale=float(context_scale), gate_bias=float(gate_bias))
        self.context_scale, self.gate_bias = float(context_scale), float(gate_bias)
        self.norm_ctx = nn.LayerNorm(dim)
        self.ctx_projection = nn.Sequential(nn.Linear(dim, dim // 2), nn.SiLU(), nn.Linear(dim // 2, 1))

    def context_logit(self, context):
        if context is None:
            return self.gate_bias
        return self.gate_bias + self.context_scale * self.ctx_projection(self.norm_ctx(context)).squeeze(-1)
