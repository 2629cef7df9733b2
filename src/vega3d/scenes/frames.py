"""Sampled frames of a scene: images for the backbones, depth-camera world maps for the geometry."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vega3d.scenes.cameras import Cameras
from vega3d.scenes.geometry import depth_token_coordinates, token_world_coordinates, unproject_depth
from vega3d.scenes.reader import Scene, SceneError
from vega3d.scenes.sampling import SAMPLING_RULE, uniform_frame_indices

DEFAULT_IMAGE_SIZE = (384, 384)


def resize_frames(frames: torch.Tensor, size: tuple[int, int] | None, mode: str = "bilinear") -> torch.Tensor:
    """Resize ``[T, 3, H, W]`` frames in [0, 1] to ``size`` (antialiased, clamped back into range);
    ``None`` or the current size returns them as they are."""
    if size is None or tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=tuple(size), mode=mode, antialias=True, align_corners=False).clamp(0.0, 1.0)


def resize_uint8(color: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Resize one uint8 ``[3, H, W]`` image (antialiased bilinear) before it becomes float: torch's uint8
    kernel is ~6x faster than the float one on a decoded frame, and its result (rounded to whole grey
    levels, as PIL's resize) differs from the float path's by at most one level."""
    if size is None or tuple(color.shape[-2:]) == tuple(size):
        return color
    return F.interpolate(color[None], size=tuple(size), mode="bilinear", antialias=True, align_corners=False)[0]


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
    input); ``valid`` ``[T, Hd, Wd]`` is the depth mask at depth resolution. ``cameras`` are the frames'
    poses and colour intrinsics (in pixels of ``image_size``), for camera-conditioned backbones. The geometry
    is kept either as world maps ``world`` ``[T, Hd, Wd, 3]`` or, as :func:`sample_frames` does, as the
    metric ``depth`` ``[T, Hd, Wd]`` with the depth camera's ``depth_intrinsic`` (poses: ``cameras``): then
    the world maps are never built, as token coordinates are linear in the depth (see
    :meth:`token_coordinates`); reading :attr:`world` builds them on request (not kept). ``geometry=False``
    frames (images and cameras only) have neither.
    """

    scene_id: str
    frame_indices: list[int]
    frame_ids: list[str]
    images: torch.Tensor
    world_maps: torch.Tensor | None  # [T, Hd, Wd, 3] when given as such; else see ``world``
    valid: torch.Tensor | None
    image_size: tuple[int, int]
    sampling: dict = field(default_factory=dict)
    cameras: Cameras | None = None
    depth: torch.Tensor | None = None
    depth_intrinsic: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame_indices)

    def _require_geometry(self) -> None:
        if self.world_maps is None and (self.depth is None or self.cameras is None):
            raise ValueError(f"scene {self.scene_id}: frames were sampled without geometry (geometry=False)")

    @property
    def world(self) -> torch.Tensor:
        """World point ``[T, Hd, Wd, 3]`` of every depth pixel (float32; built from the depth on each read)."""
        self._require_geometry()
        if self.world_maps is not None:
            return self.world_maps
        return torch.stack([torch.from_numpy(unproject_depth(d.numpy(), self.depth_intrinsic, p.numpy(), dtype=np.float32))
                            for d, p in zip(self.depth, self.cameras.cam_to_world)])

    def token_coordinates(self, grid: tuple[int, int], ignore_invalid: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """World coordinate ``[T, h, w, 3]`` (float64) and valid-depth fraction ``[T, h, w]`` of each token."""
        self._require_geometry()
        if self.world_maps is not None:
            return token_world_coordinates(self.world_maps, self.valid, grid, self.image_size, ignore_invalid)
        return depth_token_coordinates(self.depth, self.valid, self.depth_intrinsic, self.cameras.cam_to_world, grid,
                                       self.image_size, ignore_invalid)


def sample_frame_indices(scene: Scene, num_frames: int = 32) -> list[int]:
    """The frames :func:`sample_frames` takes (``floor(linspace(0, N-1, n))`` over those with a finite
    pose), from the pose files alone: no image is decoded."""
    usable = scene.usable_frames()
    try:
        return [usable[i] for i in uniform_frame_indices(len(usable), num_frames)]
    except ValueError as error:
        raise SceneError(f"{scene.root}: {error} ({len(scene)} frames, {len(scene) - len(usable)} without a finite pose)") from None


def sample_frames(scene: Scene, num_frames: int = 32, image_size: tuple[int, int] | None = DEFAULT_IMAGE_SIZE,
                  geometry: bool = True, frame_indices: list[int] | None = None) -> SceneFrames:
    """Uniformly sample ``num_frames`` frames with a finite pose (``floor(linspace(0, N-1, n))``).

    ``geometry=False`` reads the colour images and poses only (what most feature extractors need), not the
    depth (the cameras then carry no depth coverage); ``frame_indices`` (from :func:`sample_frame_indices`)
    skips choosing them again."""
    chosen = list(frame_indices) if frame_indices is not None else sample_frame_indices(scene, num_frames)
    if not geometry:
        images, color_sizes, poses = _read_colors(scene, chosen, image_size)
        return assemble_frames(scene, chosen, num_frames, images, None, color_sizes, poses, image_size)
    # The depth maps are decoded on a second thread while this one decodes and resizes the colour images:
    # both decoders release the GIL, and the colour side's resizing and conversion then cost no wall time
    # beside the longer depth side (measured: 1.0-1.5x instead of 1.5-1.7x the bare serial decode).
    stop = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="vega3d-depth") as pool:
        depth_job = pool.submit(_read_depths, scene, chosen, stop)
        try:
            images, color_sizes, poses = _read_colors(scene, chosen, image_size)
        except BaseException:
            stop.set()  # the depth thread stops at its next frame; its result is discarded
            raise
        depth = depth_job.result()
    return assemble_frames(scene, chosen, num_frames, images, depth, color_sizes, poses, image_size)


def _read_colors(scene: Scene, chosen: list[int], image_size) -> tuple[torch.Tensor, list, np.ndarray]:
    """The chosen frames' colour images, resized and in [0, 1], their original sizes and aligned poses.
    Written frame by frame into a tensor allocated once: fresh memory costs a page fault per 4 KiB, which
    on some machines is as slow as decoding the image."""
    images, color_sizes, poses = None, [], []
    for k, i in enumerate(chosen):
        color = torch.from_numpy(scene.color(i)).permute(2, 0, 1)
        color_sizes.append(tuple(color.shape[-2:]))
        image = resize_uint8(color, image_size)
        if images is None:
            images = torch.empty(len(chosen), *image.shape)
        elif image.shape != images.shape[1:]:
            raise SceneError(f"{scene.root}: colour images differ in size; pass an image_size")
        torch.div(image, 255.0, out=images[k])
        poses.append(scene.pose(i))
    return images, color_sizes, np.stack(poses)


def _read_depths(scene: Scene, chosen: list[int], stop: threading.Event) -> torch.Tensor | None:
    """The chosen frames' depth maps (metres) stacked, each decoded straight into its row."""
    depth = None
    for k, i in enumerate(chosen):
        if stop.is_set():
            return None
        if depth is None:
            first = torch.from_numpy(scene.depth(i))
            depth = torch.empty(len(chosen), *first.shape)
            depth[0] = first
        else:
            scene.depth(i, out=depth[k].numpy())
    return depth


def assemble_frames(scene: Scene, chosen: list[int], num_frames: int, images: torch.Tensor, depth: torch.Tensor | None,
                    color_sizes, poses: np.ndarray, image_size: tuple[int, int] | None) -> SceneFrames:
    """The :class:`SceneFrames` of ``scene`` from its decoded parts (``images`` in [0, 1], ``depth`` in metres or
    ``None``, each frame's original colour size and aligned pose): shared by :func:`sample_frames` and the
    prepared-scene cache, so both give the same frames."""
    size = tuple(image_size) if image_size is not None else tuple(images[0].shape[-2:])
    valid = None
    if depth is not None:  # on the CPU numpy compares 2.5-4x faster than torch (1.3 vs 3.3-6 ms, 32 HoloLens frames)
        valid = torch.from_numpy(np.greater(depth.numpy(), 0)) if depth.device.type == "cpu" else depth > 0
    return SceneFrames(
        scene_id=scene.scene_id,
        frame_indices=chosen,
        frame_ids=[scene.frame_ids[i] for i in chosen],
        images=images,
        world_maps=None,
        valid=valid,
        image_size=size,
        sampling={"rule": SAMPLING_RULE, "num_frames": num_frames, "frame_indices": chosen,
                  "frame_ids": [scene.frame_ids[i] for i in chosen]},
        cameras=_cameras(scene.color_intrinsic, poses, color_sizes, size, valid),
        depth=depth,
        depth_intrinsic=np.asarray(scene.depth_intrinsic, dtype=np.float64) if depth is not None else None,
    )


def _cameras(color_intrinsic, poses, color_sizes, size, valid) -> Cameras:
    """Aligned poses and the colour intrinsics moved to the resized images (each frame from its own size)."""
    k = torch.from_numpy(np.asarray(color_intrinsic, dtype=np.float64)[:3, :3])
    sizes = [tuple(hw) for hw in color_sizes]
    moved = {hw: Cameras(torch.eye(4, dtype=torch.float64)[None], k[None], hw).resized(size).intrinsics[0]
             for hw in set(sizes)}  # frames of a scene almost always share one size
    intrinsics = torch.stack([moved[hw] for hw in sizes])
    # exact counts; numpy counts a bool mask ~10x faster than torch reduces one
    coverage = None if valid is None else torch.tensor(
        [np.count_nonzero(frame) for frame in valid.numpy().reshape(len(valid), -1)], dtype=torch.float64) / valid[0].numel()
    return Cameras(torch.from_numpy(np.asarray(poses, dtype=np.float64)), intrinsics, tuple(size), depth_coverage=coverage)
