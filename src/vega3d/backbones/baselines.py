"""Weight-free baselines that make the 3D-awareness analysis useful on its own.

``pixels`` is the mean colour of each token's image cell (view-consistent up to lighting);
``position`` encodes the token's image position, a control that ignores the scene entirely and so is
*not* view-consistent: a backbone that scores no better than ``position`` has learned nothing 3D.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vega3d.backbones.registry import Backbone, parse_grid, register_backbone


def _no_weights(name: str, weights) -> None:
    if weights is not None:
        raise ValueError(f"backbone {name!r} has no weights; got weights={weights!r}")


@register_backbone("pixels", "mean colour of each token's cell (weight-free baseline)")
class PixelsBackbone(Backbone):
    name = "pixels"

    def __init__(self, weights=None, grid=(14, 14)):
        super().__init__()
        _no_weights(self.name, weights)
        self.grid = parse_grid(grid)

    def encode(self, frames, scene_id=None):
        return F.adaptive_avg_pool2d(frames, self.grid).permute(0, 2, 3, 1).contiguous()

    def config(self):
        return {**super().config(), "grid": list(self.grid)}


@register_backbone("position", "sin-cos code of the token's image position (not view-consistent control)")
class PositionBackbone(Backbone):
    name = "position"

    def __init__(self, weights=None, grid=(14, 14), num_frequencies=4):
        super().__init__()
        _no_weights(self.name, weights)
        self.grid = parse_grid(grid)
        self.num_frequencies = int(num_frequencies)

    def encode(self, frames, scene_id=None):
        h, w = self.grid
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        freqs = math.pi * 2.0 ** torch.arange(self.num_frequencies, dtype=torch.float32)
        angles = torch.cat([yy[..., None] * freqs, xx[..., None] * freqs], dim=-1)
        code = torch.cat([angles.sin(), angles.cos()], dim=-1)
        return code.to(frames.device, frames.dtype).expand(frames.shape[0], h, w, -1).contiguous()

    def config(self):
        return {**super().config(), "grid": list(self.grid), "num_frequencies": self.num_frequencies}
