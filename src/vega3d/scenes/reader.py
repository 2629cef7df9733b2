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
    try:  # as np.loadtxt (rows of numbers, '#' comments), ~10x faster on these 4-line files
        rows = [line.split("#", 1)[0].split() for line in path.read_text().splitlines()]
        rows = [row for row in rows if row]
        if len({len(row) for row in rows}) > 1:
            raise ValueError("rows of different lengths")
        values = np.array(rows, dtype=np.float64).reshape(len(rows), -1 if rows else 0)
    except (OSError, ValueError, UnicodeDecodeError) as error:
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
    _read_poses: dict = field(default_factory=dict, repr=False, compare=False)  # pose files read once per scene

    def __len__(self) -> int:
        return len(self.frame_ids)

    def raw_pose(self, i: int) -> np.ndarray:
        return self._read_pose(i).copy()  # callers may modify their copy

    def _read_pose(self, i: int) -> np.ndarray:
        """The camera-to-world matrix itself (not a copy): from memory, or its file read once."""
        if self.poses is not None:
            return self.poses[i]
        if i not in self._read_poses:
            self._read_poses[i] = read_matrix(self.pose_paths[i], (4, 4))
        return self._read_poses[i]

    def pose(self, i: int) -> np.ndarray:
        """Camera-to-world in the aligned scene frame: ``axis_align @ cam2world``."""
        return self.axis_align @ self._read_pose(i)  # a new array: no copy needed

    def color(self, i: int) -> np.ndarray:
        """uint8 ``[H, W, 3]``."""
        return _read_image(self.color_paths[i], mode="RGB")

    def depth(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        """float32 metres ``[H, W]``; 0 where the sensor had no return. ``out`` (float32, the map's shape)
        receives the metres in place, so a caller stacking frames writes each one once."""
        raw = _read_image(self.depth_paths[i], mode=None)
        # PIL reads a 16-bit PNG as uint16 (mode I;16) or int32 (mode I); 8-bit depth has no millimetres.
        if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32):
            raise SceneError(
                f"{self.depth_paths[i]}: depth must be a single-channel 16-bit PNG in millimetres; "
                f"got {raw.dtype} with shape {raw.shape}"
            )
        if out is not None and out.shape != raw.shape:
            raise SceneError(f"{self.depth_paths[i]}: depth map is {raw.shape[1]}x{raw.shape[0]}, the other frames' "
                             f"{out.shape[1]}x{out.shape[0]}: depth maps differ in size across frames")
        return np.divide(raw, np.float32(DEPTH_SCALE), out=out, dtype=np.float32)

    def usable_frames(self) -> list[int]:
        """Positions of frames whose pose is finite and invertible; the others are reported in one warning
        per kind (a singular pose, e.g. all zeros, would put every point of the frame at the camera centre)."""
        if not len(self):
            return []
        poses = np.stack([self._read_pose(i) for i in range(len(self))])
        finite = np.isfinite(poses).all((1, 2))
        # one batched determinant, non-finite poses zeroed first (they are reported as such, not as singular)
        singular = finite & (np.abs(np.linalg.det(np.where(finite[:, None, None], poses, 0.0)[:, :3, :3])) < 1e-6)
        usable = np.flatnonzero(finite & ~singular).tolist()
        bad = {"non-finite pose (-inf/NaN)": np.flatnonzero(~finite).tolist(),
               "singular pose (not invertible)": np.flatnonzero(singular).tolist()}
        for kind, frames in bad.items():
            if frames:
                warnings.warn(f"{self.root}: skipping {len(frames)} frame(s) with a {kind}: "
                              f"{_names([self.frame_ids[i] for i in frames])}", stacklevel=2)
        return usable


def _names(names: list[str]) -> str:
    return ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")


def _paired(root: Path, poses: list[Path], colors: dict[str, Path]) -> list[Path]:
    """Poses that have a colour image; frames with only one of the two are named in a warning and skipped."""
    stems = {pose.stem for pose in poses}
    for what, lone in (("pose without a colour image", [p.stem for p in poses if p.stem not in colors]),
                       ("colour image without a pose", sorted((s for s in colors if s not in stems), key=lambda s: _numeric_key(Path(s))))):
        if lone:
            warnings.warn(f"{root}: skipping {len(lone)} frame(s) with a {what}: {_names(lone)}", stacklevel=3)
    return [pose for pose in poses if pose.stem in colors]


def _check_focal(k: np.ndarray, path: Path) -> np.ndarray:
    if not (np.isfinite(k).all() and k[0, 0] > 0 and k[1, 1] > 0):
        raise SceneError(f"{path}: focal lengths fx={k[0, 0]:g}, fy={k[1, 1]:g} must be positive and finite")
    return k


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
    if any(p.stem.isdigit() and p.with_suffix(".jpg").is_file() for p in root.glob("*.txt")):
        raise SceneError(f"{root / 'intrinsic.txt'}: missing file (the folder has posed_images frames NNNNN.jpg/.txt)")
    raise SceneError(
        f"{root}: not a scene folder (expected posed_images files NNNNN.jpg/.png/.txt with intrinsic.txt, "
        "or a ScanNet export with color/, depth/, pose/, intrinsic/)"
    )


def load_scene(root: str | Path, axis_align: np.ndarray | str | Path | None = None, info=None,
               scene_id: str | None = None) -> Scene:
    """Open a scene folder in either layout. ``axis_align`` (matrix or file) overrides the scene's own;
    ``scene_id`` (default: the folder name) is its identity within its dataset (see :func:`scene_ids`).

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
    scene.scene_id = scene_id or scene.scene_id
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
    images = {p.stem: p for s in (".jpeg", ".jpg") for p in root.glob(f"*{s}") if p.stem.isdigit()}
    poses = _paired(root, sorted((p for p in root.glob("*.txt") if p.stem.isdigit()), key=_numeric_key), images)
    colors = [images[pose.stem] for pose in poses]
    depths = [_require(pose.with_suffix(".png")) for pose in poses]
    color_k = _check_focal(read_matrix(_require(root / "intrinsic.txt"), (4, 4)), root / "intrinsic.txt")
    depth_file = root / "depth_intrinsic.txt"
    depth_k = _check_focal(read_matrix(depth_file, (4, 4)), depth_file) if depth_file.is_file() else color_k
    return Scene(root.name, root, "posed_images", [p.stem for p in poses], colors, depths, poses, color_k, depth_k)


def _load_scannet_export(root: Path) -> Scene:
    images = {p.stem: p for s in reversed(_COLOR_SUFFIXES) for p in (root / "color").glob(f"*{s}")}
    poses = _paired(root, sorted((root / "pose").glob("*.txt"), key=_numeric_key), images)
    colors = [images[pose.stem] for pose in poses]
    depths = [_require(root / "depth" / f"{pose.stem}.png") for pose in poses]
    intrinsic = root / "intrinsic"
    color_k = _check_focal(read_matrix(_require(intrinsic / "intrinsic_color.txt"), (4, 4)), intrinsic / "intrinsic_color.txt")
    depth_k = _check_focal(read_matrix(_require(intrinsic / "intrinsic_depth.txt"), (4, 4)), intrinsic / "intrinsic_depth.txt")
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
    found, broken = [], None
    for child in sorted(p for p in path.rglob("*") if p.is_dir()):
        if any(child.is_relative_to(f) for f in found):
            continue
        try:
            detect_layout(child)
            found.append(child)
        except SceneError as error:
            broken = broken or (error if "missing file" in str(error) else None)
    if not found and broken is not None:
        raise broken
    if not found:
        raise SceneError(f"{path}: no scene folders found (posed_images or ScanNet export layout)")
    return found


def scene_ids(paths: list[Path], root: str | Path | None = None) -> list[str]:
    """Each scene's identity within its dataset: its path relative to ``root`` (POSIX, e.g. ``a/scene0``),
    or its folder name when it is ``root`` itself or no root is given. Two folders with one identity (also
    when they differ only in case, as on a case-insensitive file system) are an error naming both."""
    ids, seen = [], {}
    for path in map(Path, paths):
        relative = path.resolve().relative_to(Path(root).resolve()) if root is not None else Path(path.name)
        scene_id = relative.as_posix() if relative.parts else path.name
        if scene_id.casefold() in seen:
            raise SceneError(f"{seen[scene_id.casefold()]} and {path}: two scene folders with the same identity "
                             f"{scene_id!r}; their stored features would be mixed up (give them distinct paths)")
        seen[scene_id.casefold()] = path
        ids.append(scene_id)
    return ids
