"""The fusion ablations of paper Tab. 5 behind the common ``fusion(sem, gen)`` interface.

Only ``channel_gated`` computes a gate (per channel, ``[..., N, dim]``); the others return ``None`` for
it. Channel-wise concatenations put the semantic stream first: ``[sem; gen]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vega3d.fusion.base import Fusion
from vega3d.fusion.position import grid_position_code


class OnlyGenerativeFusion(Fusion):
    """The generative tokens alone (the semantic stream is dropped)."""

    name = "only_generative"

    def fuse(self, sem, gen, instruction):
        return gen, None


class AddFusion(Fusion):
    """``sem + gen``: a fixed, non-adaptive mixing."""

    name = "add"

    def fuse(self, sem, gen, instruction):
        return sem + gen, None


class ChannelConcatFusion(Fusion):
    """``Linear([sem; gen])`` 2 dim -> dim; ``mlp=True`` uses Linear-GELU-Linear (Tab. 5 "Concat+MLP")."""

    name = "channel_concat"

    def __init__(self, dim: int, mlp: bool = False) -> None:
        super().__init__(dim, mlp=bool(mlp))
        layers = [nn.Linear(2 * dim, dim)] + ([nn.GELU(), nn.Linear(dim, dim)] if mlp else [])
        self.project = nn.Sequential(*layers)

    def fuse(self, sem, gen, instruction):
        return self.project(torch.cat([sem, gen], dim=-1)), None


class SequenceConcatFusion(Fusion):
    """The generative tokens appended after the semantic ones: ``[..., 2N, dim]`` (twice the visual tokens)."""

    name = "sequence_concat"

    def fuse(self, sem, gen, instruction):
        return torch.cat([sem, gen], dim=-2), None


class ChannelGatedFusion(Fusion):
    """Per-channel gate ``g = sigmoid(Linear([sem; gen]))`` (2 dim -> dim); ``g sem + (1 - g) gen``."""

    name = "channel_gated"
    has_gate = True

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.gate = nn.Linear(2 * dim, dim)

    def fuse(self, sem, gen, instruction):
        gate = torch.sigmoid(self.gate(torch.cat([sem, gen], dim=-1)))
        return gate * sem + (1.0 - gate) * gen, gate


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: semantic queries attend to generative keys/values, then a 4x MLP; both residual.

    The 2-D grid code is added to queries and keys (not to values or the residual stream), so the
    output carries no position code of its own.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(dim)
        self.norm_memory = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        query, memory = self.norm_query(x), self.norm_memory(memory)
        x = x + self.attention(query + position, memory + position, memory, need_weights=False)[0]
        return x + self.mlp(self.norm_mlp(x))


class CrossAttentionFusion(Fusion):
    """``num_layers`` cross-attention blocks (paper: 1 or 3), ``num_heads`` heads (8), within each frame.

    Call it per frame: ``sem``/``gen`` ``[..., N, dim]`` with the N tokens of one frame's row-major grid,
    ``grid=(h, w)`` (default: the square grid ``sqrt(N) x sqrt(N)``, e.g. 14 x 14 for N = 196).
    """

    name = "cross_attention"

    def __init__(self, dim: int, num_layers: int = 1, num_heads: int = 8, grid: tuple[int, int] | None = None) -> None:
        grid = None if grid is None else tuple(int(n) for n in grid)
        super().__init__(dim, num_layers=num_layers, num_heads=num_heads, grid=None if grid is None else list(grid))
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"fusion 'cross_attention': num_layers must be a positive integer (paper: 1 or 3); got {num_layers!r}")
        if dim % num_heads or dim % 4:
            raise ValueError(f"fusion 'cross_attention': dim must be divisible by num_heads={num_heads} and by 4 "
                             f"(2-D position code); got {dim}")
        self.grid = grid
        self.blocks = nn.ModuleList(CrossAttentionBlock(dim, num_heads) for _ in range(num_layers))

    def fuse(self, sem, gen, instruction):
        lead, n = sem.shape[:-2], sem.shape[-2]
        height, width = self._grid(n)
        position = grid_position_code(height, width, self.dim).to(sem.device, sem.dtype)
        x, memory = sem.reshape(-1, n, self.dim), gen.reshape(-1, n, self.dim)
        for block in self.blocks:
            x = block(x, memory, position)
        return x.reshape(*lead, n, self.dim), None

    def _grid(self, num_tokens: int) -> tuple[int, int]:
        if self.grid is not None:
            if self.grid[0] * self.grid[1] != num_tokens:
                raise ValueError(f"fusion 'cross_attention': built for a {self.grid[0]}x{self.grid[1]} grid, "
                                 f"got N={num_tokens} tokens per frame")
            return self.grid
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"fusion 'cross_attention': N={num_tokens} tokens is not a square grid; "
                             "build it with grid=(h, w)")
        return side, side
