"""Geometry: depth unprojection and the world coordinate of every token of a feature grid.

Tokens get world coordinates the way App. C.1 describes: the depth map is unprojected with the depth
camera's intrinsics and the aligned pose, the dense coordinate map is resized with the same transform as
the image (bilinear, to ``image_size``), then adaptively average-pooled to the token grid (h, w).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def unproject_depth(depth: np.ndarray, intrinsic: np.ndarray, cam_to_world: np.ndarray) -> np.ndarray:
    """World points ``[H, W, 3]`` of every pixel (pixel centres at integer coordinates, OpenCV axes).

    Pixels with zero depth land on the camera centre, as in the paper's correspondence script; use the
    validity map of :func:`token_world_coordinates` to exclude them.
    """
    depth = np.asarray(depth, dtype=np.float64)
    k = np.asarray(intrinsic, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W]; got shape {depth.shape}")
    if k.shape not in ((3, 3), (4, 4)):
        raise ValueError(f"intrinsics must be 3x3 or 4x4; got shape {k.shape}")
    pose = np.asarray(cam_to_world, dtype=np.float64)
    if pose.shape != (4, 4):
        raise ValueError(f"pose must be 4x4 camera-to-world; got shape {pose.shape}")
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    v, u = np.indices(depth.shape, dtype=np.float64)
    camera = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], axis=-1)
    return camera @ pose[:3, :3].T + pose[:3, 3]


def token_world_coordinates(
    world: np.ndarray | torch.Tensor,
    valid: np.ndarray | torch.Tensor,
    grid: tuple[int, int],
    image_size: tuple[int, int] | None = (384, 384),
    ignore_invalid: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token world coordinate ``[..., h, w, 3]`` and valid-depth fraction ``[..., h, w]``.

    ``world`` is ``[..., H, W, 3]`` and ``valid`` ``[..., H, W]`` (bool). With ``ignore_invalid=False``
    (the paper's script) every pixel is averaged, zero-depth pixels included; with ``True`` only valid
    pixels are averaged (a token without any keeps coordinate 0 and fraction 0).
    """
    world = torch.as_tensor(np.asarray(world) if not isinstance(world, torch.Tensor) else world, dtype=torch.float64)
    valid = torch.as_tensor(np.asarray(valid) if not isinstance(valid, torch.Tensor) else valid).to(torch.float64)
    if world.shape[-1] != 3 or world.shape[:-1] != valid.shape:
        raise ValueError(f"world [..., H, W, 3] and valid [..., H, W] disagree: {tuple(world.shape)} vs {tuple(valid.shape)}")
    lead = world.shape[:-3]
    maps = torch.cat([world, valid[..., None]], dim=-1).reshape(-1, *world.shape[-3:-1], 4).permute(0, 3, 1, 2)
    if ignore_invalid:
        maps = torch.cat([maps[:, :3] * maps[:, 3:], maps[:, 3:]], dim=1)
    if image_size is not None and tuple(maps.shape[-2:]) != tuple(image_size):
        maps = F.interpolate(maps, size=tuple(image_size), mode="bilinear", align_corners=False)
    pooled = F.adaptive_avg_pool2d(maps, tuple(grid)).permute(0, 2, 3, 1)
    coords, fraction = pooled[..., :3], pooled[..., 3]
    if ignore_invalid:
        coords = torch.where(fraction[..., None] > 0, coords / fraction.clamp_min(1e-12)[..., None], torch.zeros_like(coords))
    return coords.reshape(*lead, *grid, 3), fraction.reshape(*lead, *grid)
