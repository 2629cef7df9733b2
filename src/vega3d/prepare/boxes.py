"""Object boxes from ScanNet's raw files: ground truth (``scannet_{split}_gt_box.json``) and proposals
(``scannet_{split}_pred_box.json``).

Per scan folder ``SCANS/sceneXXXX_XX/``: the mesh ``_vh_clean_2.ply`` (its vertices are the points),
``.aggregation.json`` (``segGroups[]``: ``objectId``, ``label``, ``segments``), the over-segmentation
``_vh_clean_2.0.010000.segs.json`` (``segIndices``, one per vertex) and the ``axisAlignment =`` line of
``sceneXXXX_XX.txt``. Points are axis-aligned first; a box is ``[cx, cy, cz, sx, sy, sz]`` (centre, full
extent) of an object's vertices. Output: ``{"scannet/sceneXXXX_XX": [box, ...]}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vega3d.prepare.inputs import PrepareError, read_json
from vega3d.scenes.reader import SceneError, read_axis_alignment

ID_RULES = ("keep", "reference")
MAX_PROPOSALS = 50


def scene_key(scene_id: str) -> str:
    return f"scannet/{scene_id}"


def read_scene_list(path: str | Path) -> list[str]:
    """Scene ids, one per line (``scannetv2_val.txt``), or the keys of a box JSON."""
    path = Path(path)
    if path.suffix == ".json":
        return sorted(str(key).removeprefix("scannet/") for key in read_json(path, "scene list"))
    if not path.is_file():
        raise PrepareError(f"{path}: scene list does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def scan_files(scan_dir: Path) -> list[Path]:
    """The raw files a scene's boxes are made from: mesh, axis alignment, aggregation, segmentation."""
    scene_id = scan_dir.name
    return [scan_dir / f"{scene_id}_vh_clean_2.ply", scan_dir / f"{scene_id}.txt",
            scan_dir / f"{scene_id}.aggregation.json", scan_dir / f"{scene_id}_vh_clean_2.0.010000.segs.json"]


def aligned_vertices(scan_dir: Path) -> np.ndarray:
    """``[N, 3]`` float64 mesh vertices of ``{scene}_vh_clean_2.ply`` in the axis-aligned frame."""
    from plyfile import PlyData

    mesh, meta = scan_files(scan_dir)[:2]
    for path in (mesh, meta):
        if not path.is_file():
            raise PrepareError(f"{path}: missing ScanNet file")
    try:
        vertex = PlyData.read(str(mesh))["vertex"]
        xyz = np.stack([np.asarray(vertex[axis], dtype=np.float64) for axis in "xyz"], axis=1)
    except Exception as error:  # plyfile raises several types for a broken file
        raise PrepareError(f"{mesh}: cannot read the mesh vertices ({type(error).__name__}: {error})") from None
    try:
        align = read_axis_alignment(meta)
    except SceneError as error:
        raise PrepareError(str(error)) from None
    return xyz @ align[:3, :3].T + align[:3, 3]


def instance_ids(scan_dir: Path, num_vertices: int) -> np.ndarray:
    """Object id per vertex (-1: none). A segment in several groups takes the last group's id."""
    agg_path, segs_path = scan_files(scan_dir)[2:]
    aggregation, segs = read_json(agg_path, "ScanNet aggregation"), read_json(segs_path, "ScanNet segmentation")
    seg_indices = np.asarray(segs.get("segIndices", []) if isinstance(segs, dict) else [], dtype=np.int64)
    if seg_indices.shape != (num_vertices,):
        raise PrepareError(f"{segs_path}: segIndices has {seg_indices.size} entries, the mesh has {num_vertices} vertices")
    groups = aggregation.get("segGroups") if isinstance(aggregation, dict) else None
    if not isinstance(groups, list):
        raise PrepareError(f"{agg_path}: no 'segGroups' list")
    segments, inverse = np.unique(seg_indices, return_inverse=True)
    object_of_segment = np.full(len(segments), -1, dtype=np.int64)
    for number, group in enumerate(groups):
        if not isinstance(group, dict) or not isinstance(group.get("objectId"), int) or group["objectId"] < 0:
            raise PrepareError(f"{agg_path}: segGroups[{number}] needs a non-negative integer 'objectId'")
        hit = np.isin(segments, np.asarray(group.get("segments", []), dtype=np.int64))
        object_of_segment[hit] = group["objectId"]
    return object_of_segment[inverse]


def boxes_of(points: np.ndarray, labels: np.ndarray) -> dict[int, list[float]]:
    """``{label: [cx, cy, cz, sx, sy, sz]}`` of the points of each non-negative label."""
    boxes = {}
    for label in np.unique(labels[labels >= 0]):
        selected = points[labels == label]
        low, high = selected.min(axis=0), selected.max(axis=0)
        boxes[int(label)] = [*((low + high) / 2).tolist(), *(high - low).tolist()]
    return boxes


def gt_box_list(scan_dir: Path, id_rule: str = "keep") -> list | None:
    """Boxes indexed by ScanNet object id. ``keep``: an id without vertices is ``null``;
    ``reference``: a scene whose ids are not exactly 0..K-1 is dropped (None), as released."""
    points = aligned_vertices(scan_dir)
    boxes = boxes_of(points, instance_ids(scan_dir, len(points)))
    if not boxes:
        return [] if id_rule == "keep" else None
    ids = sorted(boxes)
    if id_rule == "reference" and ids != list(range(len(ids))):
        return None
    return [boxes.get(i) for i in range(ids[-1] + 1)]


def gt_boxes(scans_dir: str | Path, scene_ids: list[str], id_rule: str = "keep", progress: bool = True):
    """``({"scannet/<scene>": [box or null, ...]}, [dropped scene ids])``."""
    from tqdm import tqdm

    if id_rule not in ID_RULES:
        raise PrepareError(f"--id-rule must be one of {', '.join(ID_RULES)}, got {id_rule!r}")
    table, dropped = {}, []
    for scene_id in tqdm(scene_ids, desc="gt boxes", unit="scene", disable=not progress):
        boxes = gt_box_list(Path(scans_dir) / scene_id, id_rule)
        if boxes is None:
            dropped.append(scene_id)
        else:
            table[scene_key(scene_id)] = boxes
    return dict(sorted(table.items())), dropped


def read_masks(path: Path, num_vertices: int) -> np.ndarray:
    """Boolean ``[masks, vertices]`` from a Mask3D-style ``.mask.npz`` (scipy sparse or one dense array)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "format" in archive.files:
                from scipy.sparse import load_npz

                masks = load_npz(path).toarray()
            elif len(archive.files) == 1:
                masks = archive[archive.files[0]]
            else:
                raise ValueError(f"expected a scipy sparse matrix or one array, found arrays {archive.files}")
    except (OSError, ValueError) as error:
        raise PrepareError(f"{path}: cannot read masks ({error})") from None
    if masks.ndim != 2 or masks.shape[1] != num_vertices:
        raise PrepareError(f"{path}: masks have shape {masks.shape}; expected [masks, {num_vertices}] (the mesh's vertices)")
    return masks != 0


def mask_proposals(mask_dir: str | Path, scans_dir: str | Path, scene_ids: list[str] | None = None,
                   limit: int = MAX_PROPOSALS, progress: bool = True) -> dict[str, list]:
    """Boxes of the first ``limit`` masks per scene (empty masks give no box), from ``MASKS/<scene>.mask.npz``.

    ``scene_ids`` (the split's scenes) restricts the scenes read; a mask file of a scene outside it is an
    error (a proposals folder for another split)."""
    from tqdm import tqdm

    files = sorted(Path(mask_dir).glob("*.mask.npz"))
    if not files:
        raise PrepareError(f"{mask_dir}: no *.mask.npz files")
    check_split(mask_dir, [f.name.removesuffix(".mask.npz") for f in files], scene_ids)
    table = {}
    for path in tqdm(files, desc="proposals", unit="scene", disable=not progress):
        scene_id = path.name.removesuffix(".mask.npz")
        points = aligned_vertices(Path(scans_dir) / scene_id)
        masks = read_masks(path, len(points))[:limit]
        table[scene_key(scene_id)] = [
            [*((points[m].min(0) + points[m].max(0)) / 2).tolist(), *(points[m].max(0) - points[m].min(0)).tolist()]
            for m in masks if m.any()
        ]
    return table


def json_proposals(path: str | Path, scene_ids: list[str] | None = None, box_format: str = "center_size",
                   limit: int = MAX_PROPOSALS) -> dict[str, list]:
    """Proposals from any JSON ``{scene: [box, ...]}`` (scene ``sceneXXXX_XX`` or ``scannet/sceneXXXX_XX``);
    ``box_format`` ``center_size`` ([cx, cy, cz, sx, sy, sz]) or ``min_max`` ([x0, y0, z0, x1, y1, z1])."""
    data = read_json(path, "proposals")
    if not isinstance(data, dict):
        raise PrepareError(f"{path}: expected an object mapping scene id -> list of boxes")
    check_split(path, [str(key).removeprefix("scannet/") for key in data], scene_ids)
    table = {}
    for scene, boxes in data.items():
        where = f"{path}: scene {scene}"
        array = np.asarray(boxes if boxes else np.zeros((0, 6)), dtype=np.float64) if isinstance(boxes, list) else None
        if array is None or array.ndim != 2 or array.shape[1] != 6 or not np.isfinite(array).all():
            raise PrepareError(f"{where}: expected a list of 6-number boxes")
        if box_format == "min_max":
            array = np.concatenate([(array[:, :3] + array[:, 3:]) / 2, array[:, 3:] - array[:, :3]], axis=1)
        if (array[:, 3:] < 0).any():
            raise PrepareError(f"{where}: a box has a negative size (is --box-format right?)")
        table[scene_key(str(scene).removeprefix("scannet/"))] = array[:limit].tolist()
    return dict(sorted(table.items()))


def check_split(source, found: list[str], scene_ids: list[str] | None) -> None:
    if scene_ids is None:
        return
    outside = sorted(set(found) - set(scene_ids))
    if outside:
        raise PrepareError(
            f"{source}: scene {outside[0]} (and {len(outside) - 1} more) is not in the split's scene list: "
            "proposals for another split?"
        )
