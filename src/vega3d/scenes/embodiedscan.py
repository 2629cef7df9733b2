"""EmbodiedScan info files (``embodiedscan_infos_{train,val,test}.pkl``): frame lists, axis alignment, intrinsics.

The files are pickles. They are read with :class:`InfoUnpickler`, which resolves only the numpy array
globals and a few builtins; any other class (the way a pickle runs code) is refused with an error naming
the file and the class. ``vega3d prepare scenes`` converts a file once to JSON (+ poses in safetensors) so
nothing downstream reads a pickle again.

Per ScanNet scene (``data_list`` items whose ``sample_idx`` starts with ``scannet``) we keep:
``images[i]["img_path"]`` (the frame list, every 10th ScanNet frame), ``axis_align_matrix``,
``cam2img`` (colour intrinsics), ``depth_cam2img`` and, where present, ``images[i]["cam2global"]``.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from vega3d.scenes.reader import Scene, SceneError

FORMAT = "vega3d-embodiedscan-info/1"
# What numpy arrays and scalars pickle to (protocols 2-5); ``_codecs.encode`` rebuilds bytes in protocol 2.
_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}
_BUILTINS = {"set", "frozenset", "complex", "slice"}


class UnsafePickleError(SceneError):
    """A pickle asked for a global outside the allow-list (or is not a readable pickle)."""


class InfoUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array reconstruction globals and harmless builtins."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        # numpy 1.x pickles name ``numpy.core``; numpy 2 moved it to ``numpy._core``.
        canonical = "numpy._core" + module[len("numpy.core"):] if module.startswith("numpy.core") else module
        if (canonical, name) in _ALLOWED or (module == "builtins" and name in _BUILTINS):
            return super().find_class(canonical, name)
        raise UnsafePickleError(
            f"{self.source}: refusing to unpickle {module}.{name} (only numpy arrays and plain Python values "
            "are allowed in an EmbodiedScan info file)"
        )


def read_info_pickle(path: str | Path) -> dict:
    """The info file's content, loaded with the restricted unpickler."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(f"{path}: info file does not exist")
    data = path.read_bytes()
    try:
        content = InfoUnpickler(io.BytesIO(data), str(path)).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # a truncated or foreign file: pickle raises many types
        raise UnsafePickleError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict) or not isinstance(content.get("data_list"), list):
        raise SceneError(f"{path}: expected a dict with a 'data_list' list (EmbodiedScan info format)")
    return content


@dataclass
class SceneInfo:
    """One ScanNet scene of an info file. Matrices are float64 4x4; ``poses`` is ``[N, 4, 4]`` or None."""

    scene_id: str
    frames: list[str]
    axis_align: np.ndarray
    color_intrinsic: np.ndarray
    depth_intrinsic: np.ndarray
    poses: np.ndarray | None = None


def _matrix(value, where: str) -> np.ndarray:
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        matrix = None
    if matrix is None or matrix.size not in (9, 16):
        raise SceneError(f"{where}: expected a 3x3 or 4x4 matrix, got {value!r:.60}")
    if matrix.size == 9:
        padded = np.eye(4)
        padded[:3, :3] = matrix.reshape(3, 3)
        return padded
    return matrix.reshape(4, 4)


def scannet_scenes(content: dict, source: str) -> list[SceneInfo]:
    """The ScanNet items of a loaded info file, in file order."""
    scenes = []
    for number, item in enumerate(content["data_list"]):
        sample_idx = str(item.get("sample_idx", "")) if isinstance(item, dict) else ""
        if not sample_idx.startswith("scannet"):
            continue
        where = f"{source}: data_list[{number}] ({sample_idx})"
        images = item.get("images")
        if not isinstance(images, list) or not images:
            raise SceneError(f"{where}: no 'images' frame list")
        frames, poses = [], []
        for image in images:
            if not isinstance(image, dict) or "img_path" not in image:
                raise SceneError(f"{where}: an image entry has no 'img_path'")
            frames.append(str(image["img_path"]))
            if "cam2global" in image:
                poses.append(_matrix(image["cam2global"], f"{where} {image['img_path']} cam2global"))
        if poses and len(poses) != len(frames):
            raise SceneError(f"{where}: only {len(poses)} of {len(frames)} images have a cam2global pose")
        color = item.get("cam2img", images[0].get("cam2img"))
        for key, value in (("axis_align_matrix", item.get("axis_align_matrix")), ("cam2img", color)):
            if value is None:
                raise SceneError(f"{where}: missing {key!r}")
        color_k = _matrix(color, f"{where} cam2img")
        depth = item.get("depth_cam2img")
        scenes.append(SceneInfo(
            scene_id=PurePosixPath(sample_idx).name, frames=frames,
            axis_align=_matrix(item["axis_align_matrix"], f"{where} axis_align_matrix"),
            color_intrinsic=color_k, depth_intrinsic=color_k if depth is None else _matrix(depth, f"{where} depth_cam2img"),
            poses=np.stack(poses) if poses else None,
        ))
    if not scenes:
        raise SceneError(f"{source}: no ScanNet scenes (no data_list item has a sample_idx starting with 'scannet')")
    return scenes


def convert_info_file(info_pkl: str | Path, out_dir: str | Path) -> tuple[Path, Path | None]:
    """``INFO.pkl`` -> ``OUT/INFO.json`` (+ ``OUT/INFO.poses.safetensors`` when the file has poses).

    The JSON holds the frame lists and matrices per scene and the source's SHA-256; identical input
    gives identical bytes.
    """
    import torch

    from vega3d.io import save_safetensors, sha256_file, write_json

    info_pkl, out_dir = Path(info_pkl), Path(out_dir)
    scenes = scannet_scenes(read_info_pickle(info_pkl), str(info_pkl))
    poses_name = f"{info_pkl.stem}.poses.safetensors"
    table, poses = {}, {}
    for scene in scenes:
        if scene.scene_id in table:
            raise SceneError(f"{info_pkl}: scene {scene.scene_id} appears twice in data_list")
        table[scene.scene_id] = {
            "frames": scene.frames, "axis_align_matrix": scene.axis_align.tolist(),
            "cam2img": scene.color_intrinsic.tolist(), "depth_cam2img": scene.depth_intrinsic.tolist(),
            "poses": poses_name if scene.poses is not None else None,
        }
        if scene.poses is not None:
            poses[scene.scene_id] = torch.from_numpy(scene.poses)
    document = {"format": FORMAT, "source": {"file": info_pkl.name, "sha256": sha256_file(info_pkl)}, "scenes": table}
    poses_path = save_safetensors(poses, out_dir / poses_name) if poses else None
    return write_json(out_dir / f"{info_pkl.stem}.json", document), poses_path


def read_converted_info(path: str | Path) -> dict[str, SceneInfo]:
    """Scenes of a converted info JSON (written by :func:`convert_info_file`), by scene id."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SceneError(f"{path}: cannot read a converted info file ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise SceneError(f"{path}: not a converted info file (expected format {FORMAT!r}; run `vega3d prepare scenes`)")
    pose_tables: dict[str, dict] = {}
    scenes = {}
    for scene_id, entry in document["scenes"].items():
        poses = None
        if entry.get("poses"):
            if entry["poses"] not in pose_tables:
                from safetensors.numpy import load_file

                pose_file = path.parent / entry["poses"]
                if not pose_file.is_file():
                    raise SceneError(f"{pose_file}: missing (named by {path} for scene {scene_id})")
                pose_tables[entry["poses"]] = load_file(str(pose_file))
            poses = pose_tables[entry["poses"]].get(scene_id)
        scenes[scene_id] = SceneInfo(scene_id, list(entry["frames"]), np.asarray(entry["axis_align_matrix"]),
                                     np.asarray(entry["cam2img"]), np.asarray(entry["depth_cam2img"]), poses)
    return scenes


def scene_from_info(root: Path, info: SceneInfo) -> Scene:
    """A ``posed_images`` scene folder read through its info entry: the info's frame list, axis alignment
    and intrinsics; poses from the info when it has them, otherwise the folder's ``NNNNN.txt`` files."""
    colors, depths, pose_files = [], [], []
    for frame in info.frames:
        color = root / PurePosixPath(frame).name
        if not color.is_file():
            raise SceneError(f"{color}: frame listed by the info of {info.scene_id} is missing")
        colors.append(color)
        depth = color.with_suffix(".png")
        if not depth.is_file():
            raise SceneError(f"{depth}: missing depth for frame {color.name}")
        depths.append(depth)
        pose_files.append(color.with_suffix(".txt"))
    if info.poses is None and not all(p.is_file() for p in pose_files):
        missing = next(p for p in pose_files if not p.is_file())
        raise SceneError(f"{root}: scene {info.scene_id} has no poses (no cam2global in its info and {missing.name} is missing)")
    return Scene(info.scene_id, root, "posed_images", [c.stem for c in colors], colors, depths, pose_files,
                 info.color_intrinsic, info.depth_intrinsic, info.axis_align, poses=info.poses)
