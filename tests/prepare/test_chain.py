"""The documented command chain on the procedural room written as ScanNet raw files:
prepare boxes -> proposals -> scanrefer / scan2cap -> `vega3d eval` on predictions made from the records."""

from __future__ import annotations

import json

import numpy as np

from vega3d.cli import main
from vega3d.prepare import evaluation_id
from vega3d.prepare.synthetic_scan import ROOM_LABELS, room_boxes, write_room_scan

from .conftest import LABEL_TSV


def test_room_chain_to_eval(tmp_path, capsys):
    write_room_scan(tmp_path / "scans", "scene0000_00", np.eye(4))
    (tmp_path / "scannetv2_val.txt").write_text("scene0000_00\n")
    (tmp_path / "labels.tsv").write_text(LABEL_TSV)
    scanrefer = tmp_path / "ScanRefer_filtered_val.json"
    scanrefer.write_text(json.dumps([
        {"scene_id": "scene0000_00", "object_id": str(k), "object_name": name, "ann_id": "0",
         "description": f"the {name} in the room."} for k, name in enumerate(ROOM_LABELS)]))
    proposals = tmp_path / "mask3d_boxes.json"
    proposals.write_text(json.dumps({"scene0000_00": room_boxes()[1:3]}))  # the table and the cabinet found
    meta, processed = tmp_path / "meta", tmp_path / "processed"
    for args in (["boxes", str(tmp_path / "scans"), "--scenes", str(tmp_path / "scannetv2_val.txt"), "--out", str(meta)],
                 ["proposals", str(proposals), "--split", "val", "--scenes", str(tmp_path / "scannetv2_val.txt"), "--out", str(meta)],
                 ["scanrefer", str(scanrefer), "--boxes", str(meta / "scannet_val_gt_box.json"), "--labels", str(tmp_path / "labels.tsv"),
                  "--out", str(processed)],
                 ["scan2cap", str(scanrefer), "--boxes", str(meta / "scannet_val_gt_box.json"),
                  "--proposals", str(meta / "scannet_val_pred_box.json"), "--out", str(processed)]):
        assert main(["prepare", *args]) == 0, capsys.readouterr().err
    records = json.loads((processed / "scanrefer_vg_val_llava_style.json").read_text())
    predictions = tmp_path / "scanrefer_predictions.jsonl"
    predictions.write_text("".join(json.dumps({"id": evaluation_id(r), "box": r["box"]}) + "\n" for r in records))
    capsys.readouterr()
    assert main(["eval", "scanrefer", "--predictions", str(predictions), "--annotations", str(processed / "scanrefer_val_eval.json")]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "ScanRefer\t100.0\t100.0"
    captions = json.loads((processed / "scan2cap_val_llava_style.json").read_text())
    assert [r["box_input"] is not None for r in captions] == [False, True, True, False, False]
    assert main(["prepare", "verify", str(processed)]) == 0 and main(["prepare", "verify", str(meta)]) == 0
