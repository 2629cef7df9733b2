"""The fusion ablations of paper Tab. 5 behind the common ``fusion(sem, gen)`` interface.

The structures are the authors' released ablation modules (REFERENCE-SR.md section 4), which produced
Tab. 5; the paper gives no formula for them. Attribute names are the released state-dict names.
``channel_gated`` reports a per-channel gate, ``weighted`` its scalar share; the others return ``None``
for the gate. Channel-wise concatenations put the semantic stream first: ``[sem; gen]``.
"""

from __future__ import annotations

import torch
from torch import nn

from vega3d.fusion.base import Fusion


class OnlyGenerativeFusion(Fusion):
    """The generative tokens alone (the semantic stream is dropped)."""

    name = "only_generative"

    def fuse(self, sem, gen, context):
        return gen, None


class AddFusion(Fusion):
    """``sem + gen``: a fixed, non-adaptive mixing."""

    name = "add"

    def fuse(self, sem, gen, context):
        return sem + gen, None


class ChannelConcatFusion(Fusion):
    """``projection([LN1(sem); LN2(gen)])``, 2 dim -> dim (the released ``concat``).

    ``mlp=True`` makes ``projection`` Linear-GELU-Linear (the paper's name for the row, "Concat+MLP");
    the released module, and so Tab. 5, used a single Linear.
    """

    name = "channel_concat"

    def __init__(self, dim: int, mlp: bool = False) -> None:
        super().__init__(dim, mlp=bool(mlp))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        linear = nn.Linear(2 * dim, dim)
        self.projection = nn.Sequential(linear, nn.GELU(), nn.Linear(dim, dim)) if mlp else linear

    def fuse(self, sem, gen, context):
        return self.projection(torch.cat([self.norm1(sem), self.norm2(gen)], dim=-1)), None


class SequenceConcatFusion(Fusion):
    """The generative tokens appended after the semantic ones: ``[..., 2N, dim]`` (twice the visual tokens)."""

    name = "sequence_concat"

    def fuse(self, sem, gen, context):
        return torch.cat([sem, gen], dim=-2), None


class ChannelGatedFusion(Fusion):
    """Per-channel gate (the released ``gated``): ``g = sigmoid(Linear([LN1(sem); LN2(gen)]))`` (2 dim -> dim),
    ``g LN1(sem) + (1 - g) LN2(gen)``; ``gate`` has shape ``[..., N, dim]``."""

    name = "channel_gated"
    has_gate = True

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.gate_projection = nn.Sequential(nn.Linear(2 * dim, dim), nn.Sigmoid())

    def fuse(self, sem, gen, context):
        sem, gen = self.norm1(sem), self.norm2(gen)
        gate = self.gate_projection(torch.cat([sem, gen], dim=-1))
        return gate * sem + (1.0 - gate) * gen, gate


class WeightedFusion(Fusion):
    """``(w_2d sem + w_gen gen) / (w_2d + w_gen)`` with two learnable scalars, both starting at 0.5 (the
    released ``weighted``). ``gate`` is the semantic share ``w_2d / (w_2d + w_gen)``, one value for all
    tokens, broadcast to ``[..., N]``. The spatial-reasoning release names ``weight_gen`` ``weight_3d``."""

    name = "weighted"
    has_gate = True
    released_keys = {"weight_3d": "weight_gen"}

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.weight_2d = nn.Parameter(torch.tensor(0.5))
        self.weight_gen = nn.Parameter(torch.tensor(0.5))

    def fuse(self, sem, gen, context):
        total = self.weight_2d + self.weight_gen
        fused = (self.weight_2d * sem + self.weight_gen * gen) / total
        return fused, (self.weight_2d / total).expand(sem.shape[:-1])
