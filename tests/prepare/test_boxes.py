"""GT boxes from ScanNet raw files and proposals from masks / JSON, against hand-computed boxes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from .conftest import SCENE0_BOXES, SCENE1_BOXES

from vega3d.cli import main
from vega3d.io import sha256_file
from vega3d.prepare import PrepareError, gt_box_list, gt_boxes, json_proposals, mask_proposals


def test_gt_boxes_hand_computed_and_id_rules(scans):
    np.testing.assert_allclose(np.array(gt_box_list(scans / "scene0000_00")[:2]), SCENE0_BOXES[:2])
    kept = gt_box_list(scans / "scene0000_00")
    assert kept[2] is None and np.allclose(kept[3], SCENE0_BOXES[3])  # object 2 lost all vertices to object 3
    assert gt_box_list(scans / "scene0000_00", "reference") is None  # ids 0, 1, 3: not 0..K-1
    table, dropped = gt_boxes(scans, ["scene0000_00", "scene0001_00"], "reference", progress=False)
    assert dropped == ["scene0000_00"] and list(table) == ["scannet/scene0001_00"]
    np.testing.assert_allclose(table["scannet/scene0001_00"], SCENE1_BOXES)


def test_cli_boxes_writes_fact22_format_deterministically(scans, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["prepare", "boxes", str(scans), "--scenes", str(tmp_path / "scannetv2_val.txt"), "--out", str(out)]
    assert main(args) == 0
    written = out / "scannet_val_gt_box.json"
    data = json.loads(written.read_text())
    assert list(data) == ["scannet/scene0000_00", "scannet/scene0001_00"]
    assert data["scannet/scene0000_00"][2] is None
    np.testing.assert_allclose(data["scannet/scene0000_00"][3], SCENE0_BOXES[3])
    first = written.read_bytes()
    assert main(args) == 0 and written.read_bytes() == first
    manifest = json.loads((out / "prepare_manifest.json").read_text())["files"]["scannet_val_gt_box.json"]
    ply = scans / "scene0000_00" / "scene0000_00_vh_clean_2.ply"
    assert {"path": str(ply), "bytes": ply.stat().st_size, "sha256": sha256_file(ply)} in manifest["inputs"]
    assert manifest["options"] == {"id_rule": "keep", "dropped_scenes": []} and manifest["records"] == 2


def test_broken_scan_files_name_the_file(scans):
    segs = scans / "scene0001_00" / "scene0001_00_vh_clean_2.0.010000.segs.json"
    segs.write_text(json.dumps({"segIndices": [0, 0, 1]}))
    with pytest.raises(PrepareError, match=r"segs.json: segIndices has 3 entries, the mesh has 4 vertices"):
        gt_box_list(scans / "scene0001_00")
    (scans / "scene0001_00" / "scene0001_00.txt").unlink()
    with pytest.raises(PrepareError, match=r"scene0001_00.txt: missing ScanNet file"):
        gt_box_list(scans / "scene0001_00")
    ply = scans / "scene0000_00" / "scene0000_00_vh_clean_2.ply"
    ply.write_bytes(ply.read_bytes()[:60])
    with pytest.raises(PrepareError, match=r"_vh_clean_2.ply: cannot read the mesh vertices"):
        gt_box_list(scans / "scene0000_00")


@pytest.mark.parametrize("sparse", [True, False])
def test_mask_proposals_first_masks_min_max(scans, tmp_path, sparse):
    masks = np.zeros((3, 8), dtype=np.float32)
    masks[0, [0, 1, 2]] = 1  # object 0's vertices -> its box
    masks[1, [3, 4, 7]] = 1  # (-2,5,0) (-4,6,2) (-9,12,10)
    masks[2, 5] = 1  # beyond --limit 2
    folder = tmp_path / "mask"
    folder.mkdir()
    if sparse:
        from scipy.sparse import csr_matrix, save_npz

        save_npz(folder / "scene0000_00.mask.npz", csr_matrix(masks))
    else:
        np.savez(folder / "scene0000_00.mask.npz", masks)
    table = mask_proposals(folder, scans, ["scene0000_00", "scene0001_00"], limit=2, progress=False)
    np.testing.assert_allclose(table["scannet/scene0000_00"], [SCENE0_BOXES[0], [-5.5, 8.5, 5.0, 7.0, 7.0, 10.0]])
    with pytest.raises(PrepareError, match=r"mask: scene scene0000_00 \(and 0 more\) is not in the split's scene list"):
        mask_proposals(folder, scans, ["scene0011_00"], progress=False)
    np.savez(folder / "scene0000_00.mask.npz", masks[:, :5])
    with pytest.raises(PrepareError, match=r"scene0000_00.mask.npz: masks have shape \(3, 5\); expected \[masks, 8\]"):
        mask_proposals(folder, scans, progress=False)


def test_json_proposals_formats_and_wrong_split(tmp_path, capsys):
    source = tmp_path / "proposals.json"
    source.write_text(json.dumps({"scene0000_00": [[0, 0, 0, 2, 4, 6]], "scannet/scene0001_00": []}))
    table = json_proposals(source, box_format="min_max")
    assert table == {"scannet/scene0000_00": [[1.0, 2.0, 3.0, 2.0, 4.0, 6.0]], "scannet/scene0001_00": []}
    scene_list = tmp_path / "scannetv2_train.txt"
    scene_list.write_text("scene0001_00\n")
    before = sha256_file(source)
    code = main(["prepare", "proposals", str(source), "--split", "train", "--scenes", str(scene_list), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0
    assert "proposals.json: scene scene0000_00 (and 0 more) is not in the split's scene list: proposals for another split?" in err
    assert not (tmp_path / "o").exists() and sha256_file(source) == before


def test_procedural_room_boxes_through_the_axis_alignment(tmp_path):
    from vega3d.prepare.synthetic_scan import room_boxes, write_room_scan

    angle = np.deg2rad(30)
    align = np.array([[np.cos(angle), -np.sin(angle), 0, 0.4], [np.sin(angle), np.cos(angle), 0, -1.2], [0, 0, 1, 0.1], [0, 0, 0, 1]])
    write_room_scan(tmp_path / "scans", "scene0000_00", align)
    boxes = gt_box_list(tmp_path / "scans" / "scene0000_00", "reference")
    np.testing.assert_allclose(boxes, room_boxes(), atol=1e-5)  # float32 mesh
    assert boxes[1] == pytest.approx([2.9, 2.3, 0.375, 1.4, 1.0, 0.75], abs=1e-5)  # the table
