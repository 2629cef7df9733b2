"""Read posed RGB-D scans in the two layouts users have.

``posed_images`` (EmbodiedScan / ScanNet posed images)::

    scene/NNNNN.jpg  NNNNN.png (depth)  NNNNN.txt (pose)  intrinsic.txt  depth_intrinsic.txt

``scannet_export`` (ScanNet SensReader export)::

    scene/color/N.jpg  depth/N.png  pose/N.txt  intrinsic/intrinsic_{color,depth}.txt  sceneXXXX_XX.txt

Depth PNGs are uint16 millimetres (0 = invalid); poses are 4x4 camera-to-world (OpenCV camera axes).
The pose used everywhere is ``axis_align @ cam2world``; world coordinates come from the depth camera.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

DEPTH_SCALE = 1000.0  # uint16 millimetres -> metres
_COLOR_SUFFIXES = (".jpg", ".jpeg", ".png")


class SceneError(ValueError):
    """A scene folder or one of its files cannot be used; the message names the file."""


def read_matrix(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Whitespace-separated numbers from ``path``; 3x3 intrinsics are promoted to 4x4."""
    path = Path(path)
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as error:
        raise SceneError(f"{path}: cannot read a matrix ({error})") from None
    if shape is not None and values.shape != shape:
        if shape == (4, 4) and values.shape == (3, 3):
            padded = np.eye(4)
            padded[:3, :3] = values
            return padded
        if values.size == int(np.prod(shape)):
            return values.reshape(shape)
        raise SceneError(f"{path}: expected a {shape[0]}x{shape[1]} matrix, found shape {values.shape}")
    return values


def read_axis_alignment(meta_file: Path) -> np.ndarray:
    """The ``axisAlignment = a b c ...`` line of a ScanNet ``sceneXXXX_XX.txt``; identity when absent."""
    for line in Path(meta_file).read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "axisAlignment":
            numbers = value.split()
            if len(numbers) != 16:
                raise SceneError(f"{meta_file}: axisAlignment has {len(numbers)} numbers, expected 16")
            return np.array([float(x) for x in numbers], dtype=np.float64).reshape(4, 4)
    return np.eye(4)


def _numeric_key(path: Path) -> tuple[int, str]:
    match = re.search(r"(\d+)$", path.stem)
    return (int(match.group(1)) if match else -1, path.stem)


@dataclass
class Scene:
    """One posed RGB-D scan. Frames are addressed by position ``i`` in ``frame_ids`` (sorted numerically)."""

    scene_id: str
    root: Path
    layout: str
    frame_ids: list[str]
    color_paths: list[Path]
    depth_paths: list[Path]
    pose_paths: list[Path]
    color_intrinsic: np.ndarray
    depth_intrinsic: np.ndarray
    axis_align: np.ndarray = field(default_factory=lambda: np.eye(4))
    poses: np.ndarray | None = None  # [N, 4, 4] camera-to-world from an info file; else read from pose_paths

    def __len__(self) -> int:
        return len(self.frame_ids)

    def raw_pose(self, i: int) -> np.ndarray:
        return self.poses[i] if self.poses is not None else read_matrix(self.pose_paths[i], (4, 4))

    def pose(self, i: int) -> np.ndarray:
        """Camera-to-world in the aligned scene frame: ``axis_align @ cam2world``."""
        return self.axis_align @ self.raw_pose(i)

    def color(self, i: int) -> np.ndarray:
        """uint8 ``[H, W, 3]``."""
        return _read_image(self.color_paths[i], mode="RGB")

    def depth(self, i: int) -> np.ndarray:
        """float32 metres ``[H, W]``; 0 where the sensor had no return."""
        raw = _read_image(self.depth_paths[i], mode=None)
        if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32, np.uint8):
            raise SceneError(
                f"{self.depth_paths[i]}: depth must be a single-channel 16-bit PNG in millimetres; "
                f"got {raw.dtype} with shape {raw.shape}"
            )
        return raw.astype(np.float32) / DEPTH_SCALE

    def usable_frames(self) -> list[int]:
        """Positions of frames whose pose is finite; the others are reported in one warning."""
        usable, bad = [], []
        for i in range(len(self)):
            (usable if np.isfinite(self.raw_pose(i)).all() else bad).append(i)
        if bad:
            names = ", ".join(self.frame_ids[i] for i in bad[:20]) + (" ..." if len(bad) > 20 else "")
            warnings.warn(
                f"{self.root}: skipping {len(bad)} frame(s) with a non-finite pose (-inf/NaN): {names}",
                stacklevel=2,
            )
        return usable


def _read_image(path: Path, mode: str | None) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert(mode) if mode else image
            return np.array(image)
    except (OSError, ValueError) as error:
        raise SceneError(f"{path}: cannot read image ({error})") from None


def detect_layout(root: Path) -> str:
    root = Path(root)
    if (root / "color").is_dir() and (root / "depth").is_dir() and (root / "pose").is_dir():
        return "scannet_export"
    if (root / "intrinsic.txt").is_file():
        return "posed_images"
    raise SceneError(
        f"{root}: not a scene folder (expected posed_images files NNNNN.jpg/.png/.txt with intrinsic.txt, "
        "or a ScanNet export with color/, depth/, pose/, intrinsic/)"
    )


def load_scene(root: str | Path, axis_align: np.ndarray | str | Path | None = None, info=None) -> Scene:
    """Open a scene folder in either layout. ``axis_align`` (matrix or file) overrides the scene's own.

    ``info``: a ``posed_images`` folder's EmbodiedScan info (a ``SceneInfo``, or the JSON written by
    ``vega3d prepare scenes``, looked up by the folder's name): its frame list, axis alignment and
    intrinsics (and poses, if it has them) replace the folder's.
    """
    root = Path(root)
    if not root.is_dir():
        raise SceneError(f"{root}: scene folder does not exist")
    if info is not None:
        from vega3d.scenes.embodiedscan import read_converted_info, scene_from_info

        if isinstance(info, (str, Path)):
            scenes = read_converted_info(info)
            if root.name not in scenes:
                raise SceneError(f"{info}: no info for scene {root.name!r} ({len(scenes)} scenes in the file)")
            info = scenes[root.name]
        layout, scene = "posed_images", scene_from_info(root, info)
    else:
        layout = detect_layout(root)
        scene = _load_posed_images(root) if layout == "posed_images" else _load_scannet_export(root)
    if axis_align is not None:
        if isinstance(axis_align, (str, Path)):
            path = Path(axis_align)
            scene.axis_align = read_axis_alignment(path) if "axisAlignment" in path.read_text() else read_matrix(path, (4, 4))
        else:
            scene.axis_align = np.asarray(axis_align, dtype=np.float64).reshape(4, 4)
    if not np.isfinite(scene.axis_align).all():
        raise SceneError(f"{root}: axis alignment matrix is not finite")
    if len(scene) == 0:
        raise SceneError(f"{root}: no frames found ({layout} layout)")
    return scene


def _require(path: Path) -> Path:
    if not path.is_file():
        raise SceneError(f"{path}: missing file")
    return path


def _load_posed_images(root: Path) -> Scene:
    poses = sorted((p for p in root.glob("*.txt") if p.stem.isdigit()), key=_numeric_key)
    colors, depths = [], []
    for pose in poses:
        color = next((pose.with_suffix(s) for s in (".jpg", ".jpeg") if pose.with_suffix(s).is_file()), None)
        if color is None:
            raise SceneError(f"{pose.with_suffix('.jpg')}: missing colour image for pose {pose.name}")
        colors.append(color)
        depths.append(_require(pose.with_suffix(".png")))
    color_k = read_matrix(_require(root / "intrinsic.txt"), (4, 4))
    depth_file = root / "depth_intrinsic.txt"
    depth_k = read_matrix(depth_file, (4, 4)) if depth_file.is_file() else color_k
    return Scene(root.name, root, "posed_images", [p.stem for p in poses], colors, depths, poses, color_k, depth_k)


def _load_scannet_export(root: Path) -> Scene:
    poses = sorted((root / "pose").glob("*.txt"), key=_numeric_key)
    colors, depths = [], []
    for pose in poses:
        color = next(
            (root / "color" / f"{pose.stem}{s}" for s in _COLOR_SUFFIXES if (root / "color" / f"{pose.stem}{s}").is_file()),
            None,
        )
        if color is None:
            raise SceneError(f"{root / 'color' / (pose.stem + '.jpg')}: missing colour image for {pose}")
        colors.append(color)
        depths.append(_require(root / "depth" / f"{pose.stem}.png"))
    color_k = read_matrix(_require(root / "intrinsic" / "intrinsic_color.txt"), (4, 4))
    depth_k = read_matrix(_require(root / "intrinsic" / "intrinsic_depth.txt"), (4, 4))
    meta = root / f"{root.name}.txt"
    align = read_axis_alignment(meta) if meta.is_file() else np.eye(4)
    return Scene(root.name, root, "scannet_export", [p.stem for p in poses], colors, depths, poses, color_k, depth_k, align)


def find_scenes(path: str | Path) -> list[Path]:
    """``path`` itself when it is a scene, else every scene folder below it (sorted, any depth)."""
    path = Path(path)
    if not path.exists():
        raise SceneError(f"{path}: does not exist")
    try:
        detect_layout(path)
        return [path]
    except SceneError:
        pass
    found = []
    for child in sorted(p for p in path.rglob("*") if p.is_dir()):
        if any(child.is_relative_to(f) for f in found):
            continue
        try:
            detect_layout(child)
            found.append(child)
        except SceneError:
            continue
    if not found:
        raise SceneError(f"{path}: no scene folders found (posed_images or ScanNet export layout)")
    return found
