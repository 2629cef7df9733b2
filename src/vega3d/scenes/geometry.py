"""Geometry: depth unprojection and the world coordinate of every token of a feature grid.

Tokens get world coordinates the way App. C.1 describes: the depth map is unprojected with the depth
camera's intrinsics and the aligned pose, the dense coordinate map is resized with the same transform as
the image (bilinear, to ``image_size``), then adaptively average-pooled to the token grid (h, w).

Both steps are linear and separable (rows, then columns), so they are applied as one small matrix per
axis (``pool_after_resize``), built by running torch's own interpolation and pooling on an identity:
the result is the same up to rounding, without ever materialising the upsampled map.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def unproject_depth(depth: np.ndarray, intrinsic: np.ndarray, cam_to_world: np.ndarray, dtype=np.float64) -> np.ndarray:
    """World points ``[H, W, 3]`` of every pixel (pixel centres at integer coordinates, OpenCV axes).

    Pixels with zero depth land on the camera centre, as in the paper's correspondence script; use the
    validity map of :func:`token_world_coordinates` to exclude them. ``dtype=np.float32`` is ~3x faster and
    moves points by < 1e-5 m at room scale.
    """
    depth = np.asarray(depth, dtype=dtype)
    k = np.asarray(intrinsic, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W]; got shape {depth.shape}")
    if k.shape not in ((3, 3), (4, 4)):
        raise ValueError(f"intrinsics must be 3x3 or 4x4; got shape {k.shape}")
    pose = np.asarray(cam_to_world, dtype=np.float64)
    if pose.shape != (4, 4):
        raise ValueError(f"pose must be 4x4 camera-to-world; got shape {pose.shape}")
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    h, w = depth.shape
    u = ((np.arange(w) - cx) / fx).astype(dtype)
    v = ((np.arange(h) - cy) / fy).astype(dtype)
    camera = np.stack([u[None, :] * depth, v[:, None] * depth, depth], axis=-1)
    return camera @ pose[:3, :3].T.astype(dtype) + pose[:3, 3].astype(dtype)


def pool_after_resize(length: int, resized: int | None, cells: int) -> torch.Tensor:
    """``[cells, length]`` float64 matrix: 1-D linear resize (``align_corners=False``) of ``length`` samples
    to ``resized`` (``None``: no resize), then adaptive average pooling to ``cells``."""
    eye = torch.eye(length, dtype=torch.float64)[:, None, :]  # [length, 1, length]: one unit impulse per row
    if resized is not None and resized != length:
        eye = F.interpolate(eye, size=resized, mode="linear", align_corners=False)
    return F.adaptive_avg_pool1d(eye, cells)[:, 0, :].T.contiguous()


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
    world = torch.as_tensor(np.asarray(world) if not isinstance(world, torch.Tensor) else world)
    if world.dtype != torch.float64:
        world = world.float()  # float32 maps stay float32 (sums of ~1e4 points at room scale: < 1e-5 m off)
    valid = _as_float(torch.as_tensor(np.asarray(valid) if not isinstance(valid, torch.Tensor) else valid), world.dtype)
    if world.shape[-1] != 3 or world.shape[:-1] != valid.shape:
        raise ValueError(f"world [..., H, W, 3] and valid [..., H, W] disagree: {tuple(world.shape)} vs {tuple(valid.shape)}")
    lead, (height, width) = world.shape[:-3], world.shape[-3:-1]
    rows, cols = (image_size if image_size is not None else (None, None))
    along_h = pool_after_resize(height, rows, grid[0]).to(world.dtype)
    along_w = pool_after_resize(width, cols, grid[1]).to(world.dtype)

    def pool(maps: torch.Tensor) -> torch.Tensor:  # [T, H, W, c] -> [T, h, w, c]: rows first, on the full map
        t, c = maps.shape[0], maps.shape[-1]
        out = (along_h @ maps.reshape(t, height, width * c)).reshape(t, grid[0], width, c)
        return (along_w @ out.permute(0, 1, 3, 2).reshape(t, -1, width).transpose(1, 2)).transpose(1, 2).reshape(
            t, grid[0], c, grid[1]).permute(0, 1, 3, 2).to(torch.float64)

    world = world.reshape(-1, height, width, 3)
    valid = valid.reshape(-1, height, width, 1)
    coords, fraction = pool(world * valid if ignore_invalid else world), pool(valid)[..., 0]
    if ignore_invalid:
        coords = torch.where(fraction[..., None] > 0, coords / fraction.clamp_min(1e-12)[..., None], torch.zeros_like(coords))
    return coords.reshape(*lead, *grid, 3), fraction.reshape(*lead, *grid)


def _as_float(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A mask as 0/1 floats: through uint8 for a bool mask, whose direct conversion is ~6x slower in torch."""
    return (mask.view(torch.uint8) if mask.dtype == torch.bool else mask).to(dtype)


def depth_token_coordinates(
    depth: torch.Tensor,
    valid: torch.Tensor,
    intrinsic: np.ndarray,
    cam_to_world: torch.Tensor,
    grid: tuple[int, int],
    image_size: tuple[int, int] | None = (384, 384),
    ignore_invalid: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_world_coordinates` of the world maps of ``depth`` ``[T, H, W]``, without building them.

    A pixel's camera point is ``(u' d, v' d, d)`` with ``u' = (u - cx) / fx``, ``v' = (v - cy) / fy``, and the
    world point is affine in it; resize and pooling are weighted means (weights summing to one), so the pooled
    world point is the pose applied to the pooled camera point, and ``u'``, ``v'`` fold into the per-axis
    pooling matrices: a banded pass over the rows and three small matrix products per frame instead of an
    unprojection of every pixel. The results are on the CPU.
    """
    from vega3d.scenes.row_pooling import pool_rows  # numba: imported where it is used

    t, height, width = depth.shape
    k = np.asarray(intrinsic, dtype=np.float64)
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    rows, cols = (image_size if image_size is not None else (None, None))
    along_h = pool_after_resize(height, rows, grid[0])  # [h, H]
    along_w = pool_after_resize(width, cols, grid[1])  # [w, W]
    ray_v = (torch.arange(height, dtype=torch.float64) - cy) / fy
    ray_u = (torch.arange(width, dtype=torch.float64) - cx) / fx
    # rows first on the full maps (float32 on [T, H, W], a band of pixel rows per token row: a token row
    # spans ~H/h of them, so a dense product would multiply mostly zeros), then columns on the small results
    left = torch.cat([along_h, along_h * ray_v]).to(torch.float32)  # [2h, H]: depth and v' depth
    covered = (left[: grid[0]] != 0).numpy()
    first, last = covered.argmax(1), height - covered[:, ::-1].argmax(1)
    by_rows, by_rows_valid = torch.empty(t, 2 * grid[0], width), torch.empty(t, grid[0], width)
    pool_rows(depth.to("cpu", torch.float32).contiguous().numpy(), valid.to("cpu", torch.bool).contiguous().numpy(), left.numpy(),
              first, last, ignore_invalid, by_rows.numpy(), by_rows_valid.numpy())
    by_rows = by_rows.to(torch.float64)  # [T, 2h, W]
    z = by_rows[:, : grid[0]] @ along_w.T
    x = by_rows[:, : grid[0]] @ (along_w * ray_u).T
    y = by_rows[:, grid[0] :] @ along_w.T
    fraction = by_rows_valid.to(torch.float64) @ along_w.T  # [T, h, w]
    camera = torch.stack([x, y, z], -1)  # [T, h, w, 3]
    if ignore_invalid:
        camera = camera / fraction.clamp_min(1e-12)[..., None]
    pose = cam_to_world.to("cpu", torch.float64)
    coords = torch.einsum("tij,thwj->thwi", pose[:, :3, :3], camera) + pose[:, None, None, :3, 3]
    if ignore_invalid:
        coords = torch.where(fraction[..., None] > 0, coords, torch.zeros_like(coords))
    return coords, fraction
