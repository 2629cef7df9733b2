"""Sampled frames of a scene: images for the backbones, depth-camera world maps for the geometry."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vega3d.scenes.cameras import Cameras
from vega3d.scenes.geometry import token_world_coordinates, unproject_depth
from vega3d.scenes.reader import Scene, SceneError
from vega3d.scenes.sampling import SAMPLING_RULE, uniform_frame_indices

DEFAULT_IMAGE_SIZE = (384, 384)


def resize_frames(frames: torch.Tensor, size: tuple[int, int] | None, mode: str = "bilinear") -> torch.Tensor:
    """Resize ``[T, 3, H, W]`` frames in [0, 1] to ``size`` (antialiased, clamped back into range);
    ``None`` or the current size returns them as they are."""
    if size is None or tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=tuple(size), mode=mode, antialias=True, align_corners=False).clamp(0.0, 1.0)


def resize_center_crop(frames: torch.Tensor, size: tuple[int, int], cameras: Cameras | None = None):
    """Scale ``[T, 3, H, W]`` frames by the larger ratio so they cover ``size`` (bilinear, no antialias, as the
    released VGGT/SEVA preprocessing), then crop the centre; ``cameras`` (if given) move with the pixels.
    Returns ``(frames, cameras)``."""
    (h, w), (out_h, out_w) = frames.shape[-2:], size
    scale = max(out_h / h, out_w / w)
    new_h, new_w = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    if (new_h, new_w) != (h, w):
        frames = F.interpolate(frames, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    frames = frames[..., top:top + out_h, left:left + out_w]
    if cameras is not None:
        cameras = cameras.resized((new_h, new_w)).cropped(top, left, (out_h, out_w))
    return frames, cameras


@dataclass
class SceneFrames:
    """``num_frames`` uniformly sampled frames of one scene.

    ``images`` are ``[T, 3, H, W]`` float in [0, 1] resized to ``image_size`` (the semantic branch's
    input); ``world`` ``[T, Hd, Wd, 3]`` and ``valid`` ``[T, Hd, Wd]`` stay at depth resolution and are
    resized with the same transform only when token coordinates are computed. ``cameras`` are the frames'
    poses and colour intrinsics (in pixels of ``image_size``), for camera-conditioned backbones.
    """

    scene_id: str
    frame_indices: list[int]
    frame_ids: list[str]
    images: torch.Tensor
    world: torch.Tensor
    valid: torch.Tensor
    image_size: tuple[int, int]
    sampling: dict = field(default_factory=dict)
    cameras: Cameras | None = None

    def __len__(self) -> int:
        return len(self.frame_indices)

    def token_coordinates(self, grid: tuple[int, int], ignore_invalid: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """World coordinate ``[T, h, w, 3]`` and valid-depth fraction ``[T, h, w]`` of each token."""
        return token_world_coordinates(self.world, self.valid, grid, self.image_size, ignore_invalid)


def sample_frames(scene: Scene, num_frames: int = 32, image_size: tuple[int, int] | None = DEFAULT_IMAGE_SIZE) -> SceneFrames:
    """Uniformly sample ``num_frames`` frames with a finite pose (``floor(linspace(0, N-1, n))``)."""
    usable = scene.usable_frames()
    try:
        chosen = [usable[i] for i in uniform_frame_indices(len(usable), num_frames)]
    except ValueError as error:
        raise SceneError(f"{scene.root}: {error} ({len(scene)} frames, {len(scene) - len(usable)} without a finite pose)") from None
    images, worlds, valids, color_sizes, poses = [], [], [], [], []
    for i in chosen:
        color = torch.from_numpy(scene.color(i)).permute(2, 0, 1).float().div_(255.0)
        color_sizes.append(tuple(color.shape[-2:]))
        images.append(resize_frames(color[None], image_size)[0])
        depth, pose = scene.depth(i), scene.pose(i)
        poses.append(pose)
        worlds.append(torch.from_numpy(unproject_depth(depth, scene.depth_intrinsic, pose).astype(np.float32)))
        valids.append(torch.from_numpy(depth > 0))
    shapes = {tuple(w.shape) for w in worlds}
    if len(shapes) != 1:
        raise SceneError(f"{scene.root}: depth maps differ in size across frames: {sorted(shapes)}")
    if image_size is None and len({tuple(im.shape) for im in images}) != 1:
        raise SceneError(f"{scene.root}: colour images differ in size; pass an image_size")
    size = tuple(image_size) if image_size is not None else tuple(images[0].shape[-2:])
    valid = torch.stack(valids)
    return SceneFrames(
        scene_id=scene.scene_id,
        frame_indices=chosen,
        frame_ids=[scene.frame_ids[i] for i in chosen],
        images=torch.stack(images),
        world=torch.stack(worlds),
        valid=valid,
        image_size=size,
        sampling={"rule": SAMPLING_RULE, "num_frames": num_frames, "frame_indices": chosen,
                  "frame_ids": [scene.frame_ids[i] for i in chosen]},
        cameras=_cameras(scene.color_intrinsic, poses, color_sizes, size, valid),
    )


def _cameras(color_intrinsic, poses, color_sizes, size, valid) -> Cameras:
    """Aligned poses and the colour intrinsics moved to the resized images (each frame from its own size)."""
    k = torch.from_numpy(np.asarray(color_intrinsic, dtype=np.float64)[:3, :3])
    intrinsics = torch.stack([Cameras(torch.eye(4, dtype=torch.float64)[None], k[None], hw).resized(size).intrinsics[0]
                              for hw in color_sizes])
    return Cameras(torch.from_numpy(np.stack(poses)), intrinsics, tuple(size), depth_coverage=valid.flatten(1).double().mean(1))
