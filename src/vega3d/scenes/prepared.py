"""Scenes prepared once per run: read, resized and reduced to depth + cameras a single time, however many
backbones or sweep settings then look at them (``vega3d awareness`` with a leaderboard)."""

from __future__ import annotations

from pathlib import Path

from vega3d.scenes.frames import DEFAULT_IMAGE_SIZE, SceneFrames, sample_frames
from vega3d.scenes.reader import load_scene

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
                 max_bytes: int = DEFAULT_MAX_BYTES):
        self.num_frames, self.image_size, self.max_bytes = num_frames, image_size, max_bytes
        self._kept: dict[tuple, SceneFrames] = {}
        self._bytes = 0
        self.reads = 0

    def __call__(self, path: str | Path, scene_id: str | None = None) -> SceneFrames:
        key = (str(Path(path).resolve()), scene_id)
        if key in self._kept:
            return self._kept[key]
        frames = sample_frames(load_scene(path, scene_id=scene_id), num_frames=self.num_frames, image_size=self.image_size)
        self.reads += 1
        size = _nbytes(frames)
        if self._bytes + size <= self.max_bytes:
            self._kept[key] = frames
            self._bytes += size
        return frames

    def matches(self, num_frames: int, image_size) -> bool:
        return self.num_frames == num_frames and (None if image_size is None else tuple(image_size)) == (
            None if self.image_size is None else tuple(self.image_size))
