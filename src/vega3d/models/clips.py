"""Frames of a scene folder, a video file or a folder of frame images, uniformly sampled.

The same rule as the analysis (``floor(linspace(0, N-1, n))``, no seed); the sampled positions are kept
so that stored generative features can be checked against exactly the frames the semantic stream sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vega3d.scenes import SAMPLING_RULE, Cameras, SceneError, load_scene, resize_frames, sample_frames, uniform_frame_indices
from vega3d.scenes.reader import detect_layout

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class Clip:
    """``images [T, 3, H, W]`` in [0, 1]; ``scene_id`` names the source (scene id, file stem or folder name).

    The fields are those of ``SceneFrames`` that the feature store reads, so ``encode_scene`` takes a clip.
    """

    scene_id: str
    images: torch.Tensor
    frame_indices: list[int]
    frame_ids: list[str]
    sampling: dict = field(default_factory=dict)
    cameras: Cameras | None = None  # poses + intrinsics of a posed scene; videos and frame folders have none


RELEASED_WIDTH = 518  # the released spatial-reasoning preprocessing (VGGT's "crop" mode)


def load_clip(path: str | Path, num_frames: int, image_size: tuple[int, int] | None = (384, 384),
              all_if_fewer: bool = False, scene_id: str | None = None) -> Clip:
    """Sample ``num_frames`` frames of a scene folder (posed layout), a video file or a frame folder.
    ``all_if_fewer``: a video or frame folder with fewer frames gives all of them (the released VSI-Bench
    evaluation) instead of an error. ``scene_id`` (default: the file stem or folder name) is its identity
    in a feature store."""
    clip = _load_clip(Path(path), num_frames, image_size, all_if_fewer)
    clip.scene_id = scene_id or clip.scene_id
    return clip


def _load_clip(path: Path, num_frames: int, image_size, all_if_fewer: bool) -> Clip:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such scene folder, video or frame folder")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ValueError(f"{path}: not a video file ({', '.join(VIDEO_SUFFIXES)}) nor a folder")
        return _video_clip(path, num_frames, image_size, all_if_fewer)
    try:
        detect_layout(path)
    except SceneError:
        return _folder_clip(path, num_frames, image_size, all_if_fewer)
    frames = sample_frames(load_scene(path), num_frames, image_size)
    return Clip(frames.scene_id, frames.images, frames.frame_indices, frames.frame_ids, frames.sampling, frames.cameras)


def _as_frames(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def _sampling(num_frames: int, indices: list[int], total: int) -> dict:
    return {"rule": SAMPLING_RULE.replace(" over the frames with a finite pose", ""), "num_frames": num_frames,
            "frame_indices": indices, "available": total}


def released_resize(frames: torch.Tensor) -> torch.Tensor:
    """The released spatial-reasoning frames (REFERENCE-SR section 3, steps 2-3): width 518 (PIL bicubic),
    height ``round(h * 518 / w / 14) * 14``, the middle 518 rows if taller, then the top-left corner cut
    to multiples of 28 (640x480 -> 504x392). ``frames [T, 3, H, W]`` in [0, 1] from 8-bit images."""
    out = []
    for pixels in (frames.detach().float().cpu().permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8):
        height, width = pixels.shape[:2]
        new_height = round(height * (RELEASED_WIDTH / width) / 14) * 14
        image = Image.fromarray(pixels).resize((RELEASED_WIDTH, new_height), Image.Resampling.BICUBIC)
        frame = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0)
        if new_height > RELEASED_WIDTH:
            top = (new_height - RELEASED_WIDTH) // 2
            frame = frame[:, top:top + RELEASED_WIDTH]
        out.append(frame[:, : frame.shape[1] // 28 * 28, : frame.shape[2] // 28 * 28])
    if len({f.shape for f in out}) != 1:
        raise ValueError(f"frames differ in size after the released resize: {sorted({tuple(f.shape) for f in out})}")
    return torch.stack(out)


def load_released_clip(path: str | Path, num_frames: int = 32, scene_id: str | None = None) -> Clip:
    """A clip as the released spatial-reasoning code reads it: up to ``num_frames`` frames by linspace (all
    of them if there are fewer), each resized by :func:`released_resize`."""
    clip = load_clip(path, num_frames, None, all_if_fewer=True, scene_id=scene_id)
    clip.images = released_resize(clip.images)
    return clip


def _video_clip(path: Path, num_frames: int, image_size, all_if_fewer: bool = False) -> Clip:
    import av  # PyAV, the decoder imageio[pyav] wraps

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            # The container's frame count when it has one; else one decoding pass to count (no RGB conversion).
            total = stream.frames or sum(1 for _ in container.decode(stream))
        indices = uniform_frame_indices(total, min(num_frames, total) if all_if_fewer else num_frames)
        wanted, images, decoded = set(indices), [], 0
        with av.open(str(path)) as container:  # decode up to the last wanted frame; convert only the wanted ones
            for decoded, frame in enumerate(container.decode(video=0), start=1):
                if decoded - 1 in wanted:
                    images.append(frame.to_ndarray(format="rgb24"))
                if len(images) == len(indices):
                    break
        if len(images) != len(indices):
            raise ValueError(f"the header says {total} frames but only {decoded} decode")
    except (OSError, ValueError, av.error.FFmpegError) as error:
        raise ValueError(f"{path}: cannot read video ({error})") from None
    return Clip(path.stem, resize_frames(_as_frames(images), image_size), indices, [str(i) for i in indices],
                _sampling(num_frames, indices, total))


def _folder_clip(path: Path, num_frames: int, image_size, all_if_fewer: bool = False) -> Clip:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{path}: no frame images ({', '.join(IMAGE_SUFFIXES)}) and not a scene folder")
    indices = uniform_frame_indices(len(files), min(num_frames, len(files)) if all_if_fewer else num_frames)
    images = []
    for i in indices:
        try:
            with Image.open(files[i]) as image:
                images.append(np.asarray(image.convert("RGB")))
        except (OSError, ValueError) as error:
            raise SceneError(f"{files[i]}: cannot read image ({error})") from None
    if len({im.shape for im in images}) != 1 and image_size is None:
        raise ValueError(f"{path}: frames differ in size; pass an image size")
    frames = torch.cat([resize_frames(_as_frames([im]), image_size) for im in images])
    return Clip(path.name, frames, indices, [files[i].stem for i in indices], _sampling(num_frames, indices, len(files)))
