"""Scenes prepared once per run: read, resized and reduced to depth + cameras a single time, however many
backbones or sweep settings then look at them (``vega3d awareness`` with a leaderboard); and, with a cache
folder, once across runs: the prepared frames are a deterministic function of the scene files and the
settings, so they are kept under the SHA-256 of both."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from vega3d.scenes.frames import (DEFAULT_IMAGE_SIZE, SAMPLING_RULE, SceneFrames, assemble_frames, sample_frame_indices,
                                  sample_frames)
from vega3d.scenes.reader import DEPTH_SCALE, Scene, SceneError, load_scene

CACHE_FORMAT = "vega3d-prepared-scene-1"  # part of every key: a new layout never reads an old file

DEFAULT_MAX_BYTES = 4 << 30  # ~40 scenes of 32 frames at 384x384 with 640x480 depth


def _nbytes(frames: SceneFrames) -> int:
    return sum(t.numel() * t.element_size() for t in (frames.images, frames.depth, frames.valid, frames.world_maps)
               if t is not None)


class PreparedScenes:
    """``prepared(path, scene_id=None)`` -> the :class:`SceneFrames` of
    ``sample_frames(load_scene(path, scene_id=scene_id), num_frames, image_size)``.

    Frames are kept in memory up to ``max_bytes``; once that is full, further scenes are prepared on each
    call and not kept (a run visits scenes in the same order for every backbone, so keeping the first ones
    beats evicting the oldest, which would evict exactly the scene needed next). ``prepared.reads`` counts
    the scenes actually read.
    """

    def __init__(self, num_frames: int = 32, image_size: tuple[int, int] | None = DEFAULT_IMAGE_SIZE,
                 max_bytes: int = DEFAULT_MAX_BYTES, cache_dir: str | Path | None = None):
        self.num_frames, self.image_size, self.max_bytes = num_frames, image_size, max_bytes
        self.cache = SceneCache(cache_dir) if cache_dir is not None else None
        self._kept: dict[tuple, SceneFrames] = {}
        self._bytes = 0
        self.reads = 0

    def __call__(self, path: str | Path, scene_id: str | None = None) -> SceneFrames:
        key = (str(Path(path).resolve()), scene_id)
        if key in self._kept:
            return self._kept[key]
        scene = load_scene(path, scene_id=scene_id)
        frames = chosen = entry = None
        if self.cache is not None:
            chosen, entry = self.cache.entry(scene, self.num_frames, self.image_size)
            frames = self.cache.load(entry, scene, chosen, self.num_frames, self.image_size)
        if frames is None:
            frames = sample_frames(scene, num_frames=self.num_frames, image_size=self.image_size, frame_indices=chosen)
            self.reads += 1
            if self.cache is not None:
                self.cache.save(entry, scene, frames)
        size = _nbytes(frames)
        if self._bytes + size <= self.max_bytes:
            self._kept[key] = frames
            self._bytes += size
        return frames

    def matches(self, num_frames: int, image_size) -> bool:
        return self.num_frames == num_frames and (None if image_size is None else tuple(image_size)) == (
            None if self.image_size is None else tuple(self.image_size))


class SceneCache:
    """Prepared frames on disk, one safetensors file per (scene files, settings): the resized colour as the
    uint8 it was before division, the depth as the sensor's uint16 millimetres, the aligned poses. Loading
    redoes the same last steps as :func:`sample_frames` (division, ``depth > 0``, cameras), so cached frames
    equal freshly prepared ones bit for bit; any change to a sampled frame's files, a pose, an intrinsic or
    the settings changes the key. Files are written atomically; an unreadable one is prepared again."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.hits = 0

    def entry(self, scene: Scene, num_frames: int, image_size) -> tuple[list[int], Path]:
        """The frames the settings sample and the file keeping them, named by the SHA-256 of the settings, the
        intrinsics, those frames' poses and the bytes of their colour and depth files."""
        chosen = sample_frame_indices(scene, num_frames)
        digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "rule": SAMPLING_RULE, "num_frames": num_frames,
                                            "image_size": None if image_size is None else list(image_size),
                                            "frames": chosen, "ids": [scene.frame_ids[i] for i in chosen]}).encode())
        for matrix in (scene.color_intrinsic, scene.depth_intrinsic, *(scene.pose(i) for i in chosen)):
            digest.update(np.ascontiguousarray(matrix, dtype=np.float64).tobytes())
        for i in chosen:
            for file in (scene.color_paths[i], scene.depth_paths[i]):
                digest.update(Path(file).read_bytes())
        return chosen, self.folder / f"{scene.scene_id.replace('/', '__')}-{digest.hexdigest()[:24]}.safetensors"

    def load(self, path: Path, scene: Scene, chosen: list[int], num_frames: int, image_size) -> SceneFrames | None:
        """The frames kept in ``path``, or ``None`` when there are none (or they cannot be read: a warning)."""
        if not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            parts = load_file(path)
            images = torch.div(parts["images_uint8"], 255.0)  # the op sample_frames applies
            depth = torch.from_numpy(np.divide(parts["depth_mm"].numpy(), np.float32(DEPTH_SCALE), dtype=np.float32))
            frames = assemble_frames(scene, chosen, num_frames, images, depth, parts["color_sizes"].tolist(),
                                     parts["poses"].numpy(), image_size)
        except (OSError, ValueError, KeyError, RuntimeError, SceneError, SafetensorError) as error:
            warnings.warn(f"{path}: unreadable prepared scene ({' '.join(str(error).split())}); preparing it again", stacklevel=3)
            return None
        self.hits += 1
        return frames

    def save(self, path: Path, scene: Scene, frames: SceneFrames) -> Path:
        from PIL import Image

        from vega3d.io import save_safetensors

        sizes = []
        for i in frames.frame_indices:  # each colour image's size before resizing, from its header (no decode)
            with Image.open(scene.color_paths[i]) as image:
                sizes.append((image.height, image.width))
        tensors = {"images_uint8": torch.round(frames.images * 255.0).to(torch.uint8),
                   "depth_mm": torch.round(frames.depth * DEPTH_SCALE).to(torch.int32).to(torch.uint16),
                   "color_sizes": torch.tensor(sizes, dtype=torch.int64),
                   "poses": frames.cameras.cam_to_world.to(torch.float64)}
        return save_safetensors(tensors, path, metadata={"format": CACHE_FORMAT, "scene": scene.scene_id})
