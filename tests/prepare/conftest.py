"""Tiny files in the exact official formats: a ScanNet scan (binary PLY, aggregation, segs, axisAlignment),
ScanRefer / Multi3DRefer / ScanQA / SQA3D records and the ScanNet label map.

Scan ``scene0000_00`` (axis alignment: 90 degrees about z, then +1 in x and +2 in y, so a raw point
(x, y, z) lands at (1 - y, 2 + x, z)), objects by segment:
  object 0: segment 0, vertices (0,0,0) (1,0,0) (0,2,1)  -> aligned box centre (0, 2.5, 0.5), size (2, 1, 1)
  object 1: segments 1+2, vertices (3,3,0) (4,5,2)       -> centre (-3, 5.5, 1), size (2, 1, 2)
  object 2: segment 3, overwritten by object 3 (later)   -> no vertices: a gap in the ids
  object 3: segment 3, vertices (0,0,3) (2,1,4)          -> centre (0.5, 3, 3.5), size (1, 2, 1)
  segment 4 (vertex (10,10,10)) belongs to no object.
Scan ``scene0001_00`` (identity alignment): objects 0 and 1, contiguous ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ALIGN = np.array([[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
SCENE0_BOXES = [[0.0, 2.5, 0.5, 2.0, 1.0, 1.0], [-3.0, 5.5, 1.0, 2.0, 1.0, 2.0], None, [0.5, 3.0, 3.5, 1.0, 2.0, 1.0]]
SCENE1_BOXES = [[0.5, 0.5, 0.5, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0, 2.0, 2.0, 2.0]]


def write_scan(scans: Path, scene_id: str, vertices, seg_indices, groups, align=np.eye(4)) -> Path:
    from plyfile import PlyData, PlyElement

    folder = scans / scene_id
    folder.mkdir(parents=True)
    vertex = np.array([(*v, 128, 64, 32, 255) for v in vertices],
                      dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")])
    face = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    PlyData([PlyElement.describe(vertex, "vertex"), PlyElement.describe(face, "face")], text=False).write(
        str(folder / f"{scene_id}_vh_clean_2.ply"))
    (folder / f"{scene_id}.aggregation.json").write_text(json.dumps({
        "sceneId": f"scannet.{scene_id}", "appId": "Aggregator.v2",
        "segGroups": [{"id": i, "objectId": oid, "segments": segs, "label": label} for i, (oid, segs, label) in enumerate(groups)],
        "segmentsFile": f"scannet.{scene_id}_vh_clean_2.0.010000.segs.json"}))
    (folder / f"{scene_id}_vh_clean_2.0.010000.segs.json").write_text(json.dumps(
        {"params": {"kThresh": "0.0001", "segMinVerts": "20"}, "sceneId": scene_id, "segIndices": seg_indices}))
    (folder / f"{scene_id}.txt").write_text(
        "colorHeight = 968\ncolorWidth = 1296\naxisAlignment = " + " ".join(f"{v:g}" for v in np.asarray(align).ravel()) + "\n")
    return folder


@pytest.fixture
def scans(tmp_path) -> Path:
    root = tmp_path / "scans"
    write_scan(root, "scene0000_00",
               vertices=[(0, 0, 0), (1, 0, 0), (0, 2, 1), (3, 3, 0), (4, 5, 2), (0, 0, 3), (2, 1, 4), (10, 10, 10)],
               seg_indices=[10, 10, 10, 11, 12, 13, 13, 14],
               groups=[(0, [10], "chair"), (1, [11, 12], "chair"), (2, [13], "table"), (3, [13], "kitchen cabinet")],
               align=ALIGN)
    write_scan(root, "scene0001_00", vertices=[(0, 0, 0), (1, 1, 1), (2, 2, 2), (4, 4, 4)],
               seg_indices=[0, 0, 1, 1], groups=[(0, [0], "desk"), (1, [1], "door")])
    (tmp_path / "scannetv2_val.txt").write_text("scene0000_00\nscene0001_00\n")
    return root


@pytest.fixture
def gt_box_file(tmp_path) -> Path:
    path = tmp_path / "boxes" / "scannet_val_gt_box.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"scannet/scene0000_00": SCENE0_BOXES, "scannet/scene0001_00": SCENE1_BOXES}))
    return path


LABEL_TSV = (
    "id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\n"
    "1\tchair\tchair\t4000\t5\t4\tchair\n"
    "2\tkitchen cabinet\tkitchen cabinet\t300\t3\t6\tcabinet\n"
    "3\tceiling lamp\tlamp\t50\t35\t11\tlamp\n"
    "4\tdesk\tdesk\t600\t14\t10\tdesk\n"
)


@pytest.fixture
def label_map(tmp_path) -> Path:
    path = tmp_path / "scannetv2-labels.combined.tsv"
    path.write_text(LABEL_TSV)
    return path


def scanrefer_record(scene_id, object_id, object_name, ann_id, description):
    return {"scene_id": scene_id, "object_id": str(object_id), "object_name": object_name, "ann_id": str(ann_id),
            "description": description, "token": description.split()}


@pytest.fixture
def scanrefer_val(tmp_path) -> Path:
    records = [
        scanrefer_record("scene0000_00", 0, "chair", 0, "this is a black chair. it is near the table."),
        scanrefer_record("scene0000_00", 0, "chair", 1, "a chair by the window."),
        scanrefer_record("scene0000_00", 1, "chair", 0, "the other chair."),
        scanrefer_record("scene0000_00", 3, "kitchen_cabinet", 0, "a white KITCHEN cabinet."),
        scanrefer_record("scene0001_00", 0, "ceiling_lamp", 0, "a lamp."),
        scanrefer_record("scene0001_00", 1, "not_in_the_map", 0, "something."),
    ]
    path = tmp_path / "ScanRefer_filtered_val.json"
    path.write_text(json.dumps(records))
    return path
