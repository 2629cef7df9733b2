"""The cross-attention ablation (Tab. 5 "Cross-Attn (1/3 Layers)"), as the released ``cross_attention``.

Semantic tokens query the generative tokens of the same frame; the 2-D sin-cos code of the token grid is
added to queries and keys only. The generative stream is the fixed memory of every block.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vega3d.fusion.base import Fusion
from vega3d.fusion.position import grid_position_code


class CrossAttentionBlock(nn.Module):
    """``x += MHA(LNq(x) + P, LNk(gen) + P, LNv(gen))``; ``x += MLP(LN2(x))`` (4x, GELU, dropout)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1_query = nn.LayerNorm(dim)
        self.norm1_key = nn.LayerNorm(dim)
        self.norm1_value = nn.LayerNorm(dim)
        self.cross_attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        query = self.norm1_query(x) + position
        key = self.norm1_key(memory) + position
        x = x + self.cross_attention(query, key, self.norm1_value(memory), need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttentionFusion(Fusion):
    """``num_layers`` cross-attention blocks (paper: 1 or 3), ``num_heads`` heads (8), within each frame.

    Call it per frame: ``sem``/``gen`` ``[..., N, dim]`` with the N tokens of one frame's row-major grid,
    ``grid=(h, w)`` (default: the square grid ``sqrt(N) x sqrt(N)``, e.g. 14 x 14 for N = 196).
    ``dropout`` (0.1 as released) acts on the attention weights and in the MLP, in training mode only.
    """

    name = "cross_attention"

    def __init__(self, dim: int, num_layers: int = 1, num_heads: int = 8, dropout: float = 0.1,
                 grid: tuple[int, int] | None = None) -> None:
        grid = None if grid is None else tuple(int(n) for n in grid)
        super().__init__(dim, num_layers=num_layers, num_heads=num_heads, dropout=float(dropout),
                         grid=None if grid is None else list(grid))
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"fusion 'cross_attention': num_layers must be a positive integer (paper: 1 or 3); got {num_layers!r}")
        if dim % num_heads or dim % 4:
            raise ValueError(f"fusion 'cross_attention': dim must be divisible by num_heads={num_heads} and by 4 "
                             f"(2-D position code); got {dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"fusion 'cross_attention': dropout must be in [0, 1); got {dropout!r}")
        self.grid = grid
        self.cross_attn_blocks = nn.ModuleList(CrossAttentionBlock(dim, num_heads, dropout) for _ in range(num_layers))

    def fuse(self, sem, gen, context):
        lead, n = sem.shape[:-2], sem.shape[-2]
        height, width = self._grid(n)
        position = grid_position_code(height, width, self.dim).to(sem.device, sem.dtype)
        x, memory = sem.reshape(-1, n, self.dim), gen.reshape(-1, n, self.dim)
        for block in self.cross_attn_blocks:
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
