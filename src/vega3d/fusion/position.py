"""Sinusoidal position codes: the 2-D token-grid code of the cross-attention variant and the 3-D world
code added to the fused tokens in the 3D-scene-understanding setting (REFERENCE.md)."""

from __future__ import annotations

import torch

# Box (metres) the world code covers, per axis x, y, z; coordinates outside are clamped onto it.
WORLD_BOUNDS = ((-15.0, 15.0), (-15.0, 15.0), (-5.0, 5.0))
VOXEL_SIZE = 0.1


def sincos(positions: torch.Tensor, num_features: int, temperature: float = 10000.0) -> torch.Tensor:
    """``[..., num_features]``: ``[sin(p w_0) .. sin(p w_{F/2-1}), cos(p w_0) .. cos(p w_{F/2-1})]``
    with ``w_i = temperature ** (-2 i / F)`` (the Transformer frequencies, sines then cosines)."""
    if num_features < 2 or num_features % 2:
        raise ValueError(f"num_features must be a positive even number; got {num_features}")
    exponents = torch.arange(num_features // 2, dtype=torch.float64, device=positions.device) * 2.0 / num_features
    angles = positions.to(torch.float64)[..., None] * temperature ** -exponents
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def grid_position_code(height: int, width: int, dim: int) -> torch.Tensor:
    """2-D sin-cos code ``[height * width, dim]`` of a row-major token grid: the first ``dim / 2``
    features encode the row index, the last ``dim / 2`` the column index."""
    if dim % 4:
        raise ValueError(f"the 2-D position code needs dim divisible by 4; got {dim}")
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.cat([sincos(rows.flatten(), dim // 2), sincos(cols.flatten(), dim // 2)], dim=-1).float()


def world_voxel_index(coords: torch.Tensor, bounds=WORLD_BOUNDS, voxel_size: float = VOXEL_SIZE) -> torch.Tensor:
    """Integer voxel index ``[..., 3]`` of world coordinates ``[..., 3]`` (metres): clamp to ``bounds``,
    then ``floor((x - low) / voxel_size)``, so x = -15 m -> 0 and x = 15 m -> 300 at 0.1 m."""
    if coords.shape[-1] != 3:
        raise ValueError(f"world coordinates must have shape [..., 3]; got {tuple(coords.shape)}")
    low = torch.tensor([b[0] for b in bounds], dtype=torch.float64, device=coords.device)
    high = torch.tensor([b[1] for b in bounds], dtype=torch.float64, device=coords.device)
    clamped = torch.maximum(torch.minimum(coords.to(torch.float64), high), low)
    # The tiny offset keeps exact multiples of the voxel size (0.3 m / 0.1 m) from rounding down.
    return torch.floor((clamped - low) / voxel_size + 1e-9).long()


def world_position_code(coords: torch.Tensor, dim: int, bounds=WORLD_BOUNDS, voxel_size: float = VOXEL_SIZE,
                        temperature: float = 10000.0) -> torch.Tensor:
    """3-D sin-cos code ``[..., dim]`` of world coordinates ``[..., 3]`` (metres).

    Each axis gets ``F = 2 * (dim // 6)`` features (the largest even number <= dim / 3) of its voxel
    index (:func:`world_voxel_index`), in the order x, y, z; the remaining ``dim - 3 F`` features are zero.
    Returned in ``coords``' floating dtype (float32 for integer input).
    """
    if dim < 6:
        raise ValueError(f"the 3-D position code needs dim >= 6; got {dim}")
    index = world_voxel_index(coords, bounds, voxel_size)
    per_axis = 2 * (dim // 6)
    code = torch.cat([sincos(index[..., axis], per_axis, temperature) for axis in range(3)], dim=-1)
    code = torch.nn.functional.pad(code, (0, dim - 3 * per_axis))
    return code.to(coords.dtype if coords.is_floating_point() else torch.float32)
