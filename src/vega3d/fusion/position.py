"""Sinusoidal position codes: the 2-D token-grid code of the cross-attention variant and the 3-D world
code added to the fused tokens in the 3D-scene-understanding setting (REFERENCE-3D facts 9, 10, 13: the
released ``avg-discrete-sin3d`` code, the only one vega3d has)."""

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
    """Voxel index ``[..., 3]`` of world coordinates ``[..., 3]`` (metres), as the released 3D model computes it
    (REFERENCE-3D fact 10): clamp to ``bounds``, subtract the lower bound, divide by ``voxel_size``, round
    half to even, so x = -15 m -> 0 and x = 15 m -> 300 at 0.1 m.

    The arithmetic runs in ``coords``' own dtype: bf16 coordinates reproduce the released run, whose inputs
    were cast to bf16 (fact 8; about 0.06 m steps at 8-16 m). Returned as float in that dtype.
    """
    if coords.shape[-1] != 3:
        raise ValueError(f"world coordinates must have shape [..., 3]; got {tuple(coords.shape)}")
    if not coords.is_floating_point():
        coords = coords.float()
    low = torch.tensor([b[0] for b in bounds], dtype=coords.dtype, device=coords.device)
    high = torch.tensor([b[1] for b in bounds], dtype=coords.dtype, device=coords.device)
    return torch.round((torch.maximum(torch.minimum(coords, high), low) - low) / voxel_size)


def interleaved_sincos(positions: torch.Tensor, num_features: int, temperature: float = 10000.0) -> torch.Tensor:
    """``[..., num_features]`` in fp32: channel ``2k`` is ``sin(p / d_2k)``, channel ``2k+1`` is ``cos(p / d_2k)``,
    ``d_i = temperature ** (2 floor(i / 2) / num_features)`` (the released ``PositionEmbeddingSine3D``).
    An odd count is computed one channel longer and the last channel dropped."""
    padded = num_features + num_features % 2
    exponents = 2.0 * torch.arange(padded // 2, dtype=torch.float32, device=positions.device) / num_features
    angles = positions.float()[..., None] / temperature ** exponents
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)[..., :num_features]


def world_position_code(coords: torch.Tensor, dim: int, bounds=WORLD_BOUNDS, voxel_size: float = VOXEL_SIZE,
                        temperature: float = 10000.0) -> torch.Tensor:
    """3-D sin-cos code ``[..., dim]`` of world coordinates ``[..., 3]`` (metres), REFERENCE-3D facts 10 and 13.

    The voxel index of each axis (:func:`world_voxel_index`) gets ``F = dim // 3`` interleaved sin/cos
    channels (:func:`interleaved_sincos`): x in channels ``0..F-1``, y in ``F..2F-1``, z in ``2F..3F-1``; the
    remaining ``dim - 3F`` channels are zero (D = 3584: F = 1194, channels 3582-3583 zero). Computed in fp32,
    returned in ``coords``' floating dtype (float32 for integer input).
    """
    if dim < 6:
        raise ValueError(f"the 3-D position code needs dim >= 6; got {dim}")
    index = world_voxel_index(coords, bounds, voxel_size)
    per_axis = dim // 3
    code = torch.cat([interleaved_sincos(index[..., axis], per_axis, temperature) for axis in range(3)], dim=-1)
    code = torch.nn.functional.pad(code, (0, dim - 3 * per_axis))
    return code.to(index.dtype)


def pool_world_coordinates(world: torch.Tensor, patch_size: int, grid: tuple[int, int]) -> torch.Tensor:
    """Per-token world coordinates ``[V, h, w, 3]`` of per-pixel maps ``[V, H, W, 3]`` as the released 3D model
    takes them (fact 9): keep the top-left ``(H // patch) * patch`` pixels (384 -> 378), then average-pool
    to ``grid`` (27 x 27 px per token at 14 x 14). Runs in ``world``'s dtype (bf16 in the released run)."""
    if world.ndim != 4 or world.shape[-1] != 3:
        raise ValueError(f"world coordinates must be [frames, H, W, 3]; got {tuple(world.shape)}")
    height, width = (world.shape[1] // patch_size) * patch_size, (world.shape[2] // patch_size) * patch_size
    maps = world[:, :height, :width].permute(0, 3, 1, 2)
    return torch.nn.functional.adaptive_avg_pool2d(maps, tuple(grid)).permute(0, 2, 3, 1)
