"""The bundled procedural room as ScanNet raw files, so the whole preparation chain runs on a known scene.

Writes ``SCANS/<scene>/`` with ``_vh_clean_2.ply`` (a closed box mesh per object: 8 vertices, 12
triangles), ``.aggregation.json`` (one segment per object), ``_vh_clean_2.0.010000.segs.json`` and
``<scene>.txt``. The mesh is stored in un-aligned coordinates (the inverse of ``axis_align`` applied),
as ScanNet stores its scans, so the axis alignment must be applied to recover the room's boxes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vega3d.scenes.synthetic import OBJECTS, ROOM

ROOM_LABELS = ["wall", "table", "cabinet", "crate", "box"]  # object ids 0..4: the room shell, then OBJECTS
_CORNERS = np.array([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=np.float64)
_TRIANGLES = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                       [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])


def room_boxes() -> list[list[float]]:
    """``[cx, cy, cz, sx, sy, sz]`` of object ids 0..4 in the aligned frame."""
    return [[*((lo + hi) / 2).tolist(), *(hi - lo).tolist()] for lo, hi in [ROOM, *OBJECTS]]


def write_room_scan(scans_dir: str | Path, scene_id: str = "scene0000_00", axis_align: np.ndarray | None = None) -> Path:
    from plyfile import PlyData, PlyElement

    align = np.eye(4) if axis_align is None else np.asarray(axis_align, dtype=np.float64)
    folder = Path(scans_dir) / scene_id
    folder.mkdir(parents=True, exist_ok=True)
    aligned = np.concatenate([lo + _CORNERS * (hi - lo) for lo, hi in [ROOM, *OBJECTS]])
    raw = (np.linalg.inv(align) @ np.c_[aligned, np.ones(len(aligned))].T).T[:, :3]
    vertex = np.zeros(len(raw), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = raw.T
    faces = np.concatenate([_TRIANGLES + 8 * k for k in range(len(ROOM_LABELS))])
    face = np.zeros(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = faces
    PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(face, "face")]).write(str(folder / f"{scene_id}_vh_clean_2.ply"))
    groups = [{"id": k, "objectId": k, "segments": [k], "label": label} for k, label in enumerate(ROOM_LABELS)]
    (folder / f"{scene_id}.aggregation.json").write_text(json.dumps({"sceneId": f"scannet.{scene_id}", "segGroups": groups}))
    (folder / f"{scene_id}_vh_clean_2.0.010000.segs.json").write_text(
        json.dumps({"sceneId": scene_id, "segIndices": np.repeat(np.arange(len(ROOM_LABELS)), 8).tolist()}))
    (folder / f"{scene_id}.txt").write_text("axisAlignment = " + " ".join(repr(float(v)) for v in align.ravel()) + "\n")
    return folder
