"""The five tasks: processed records in the released layout, checked field by field, and lined up with
``vega3d eval`` (predictions made from the prepared records score 100 against the prepared annotations)."""

from __future__ import annotations

import json

import pytest
import yaml

from vega3d.cli import main
from vega3d.evaluation import score
from vega3d.io import sha256_file
from vega3d.prepare import BoxFile, PrepareError, evaluation_id, read_label_map
from vega3d.prepare.tasks import build_scan2cap, build_scanrefer, write_prepared

from .conftest import SCENE0_BOXES, SCENE1_BOXES, scanrefer_record


def load(path):
    return json.loads(path.read_text())


def test_scanrefer_records_unique_multiple_and_eval(tmp_path, scanrefer_val, gt_box_file, label_map):
    before = sha256_file(scanrefer_val)
    out = tmp_path / "processed"
    assert main(["prepare", "scanrefer", str(scanrefer_val), "--boxes", str(gt_box_file), "--labels", str(label_map),
                 "--out", str(out)]) == 0
    records = load(out / "scanrefer_vg_val_llava_style.json")
    assert records[0] == {
        "id": 0, "video": "scannet/scene0000_00",
        "conversations": [{"from": "human", "value": "<image>Identify the object according to the following description.\n"
                                                     "this is a black chair. it is near the table."},
                          {"from": "gpt", "value": "<ground>"}],
        "box": SCENE0_BOXES[0],
        "metadata": {"dataset": "scanrefer", "question_type": "multiple", "ann_id": "0", "object_id": "0"},
    }
    # two chairs (nyu 5) in scene 0 -> multiple; the kitchen cabinet (nyu 3) is alone -> unique; in scene 1 the
    # lamp (nyu 35, outside ScanRefer's classes) and an unmapped name both become 39 -> multiple
    assert [r["metadata"]["question_type"] for r in records] == ["multiple"] * 3 + ["unique", "multiple", "multiple"]
    assert records[5]["box"] == SCENE1_BOXES[1]
    assert sha256_file(scanrefer_val) == before  # the reference rewrites this file in place; we never do
    eval_file = out / "scanrefer_val_eval.json"
    predictions = [{"id": evaluation_id(r), "box": r["box"]} for r in records]
    metrics = score("scanrefer", predictions, eval_file)
    assert metrics["Acc@0.5"] == 100.0 and metrics["num_samples"] == 6 and metrics["num_missing"] == 0
    predictions[3]["box"] = SCENE0_BOXES[1]  # the unique sample, wrong object
    assert score("scanrefer", predictions, eval_file)["unique/Acc@0.5"] == 0.0
    manifest = load(out / "prepare_manifest.json")["files"]
    entry = manifest["scanrefer_vg_val_llava_style.json"]
    assert entry["records"] == 6 and entry["sha256"] == sha256_file(out / "scanrefer_vg_val_llava_style.json")
    assert [i["sha256"] for i in entry["inputs"]] == [sha256_file(p) for p in (scanrefer_val, gt_box_file, label_map)]
    assert "scanrefer_val_eval.json" in manifest


def test_multi3drefer_records_and_eval(tmp_path, gt_box_file):
    source = tmp_path / "multi3drefer_val.json"
    source.write_text(json.dumps([
        {"scene_id": "scene0000_00", "object_name": "chair", "ann_id": 0, "description": "the chairs.",
         "object_ids": [0, 1], "eval_type": "mt", "spatial": False, "color": False},
        {"scene_id": "scene0000_00", "object_name": "sofa", "ann_id": 1, "description": "a red sofa.",
         "object_ids": [], "eval_type": "zt_w_d", "spatial": False, "color": True},
        {"scene_id": "scene0001_00", "object_name": "door", "ann_id": 0, "description": "the door.",
         "object_ids": [1], "eval_type": "st_wo_d", "spatial": False, "color": False},
    ]))
    assert main(["prepare", "multi3drefer", str(source), "--boxes", str(gt_box_file), "--out", str(tmp_path)]) == 0
    records = load(tmp_path / "multi3drefer_val_llava_style.json")
    assert records[0]["conversations"][0]["value"] == (
        "<image>Identify the object according to the following description.\nthe chairs.\n"
        "There may be no corresponding object, or there may be one or more objects.")
    assert records[0]["box"] == SCENE0_BOXES[:2] and records[1]["box"] == [] and records[2]["box"] == [SCENE1_BOXES[1]]
    assert records[1]["metadata"] == {"dataset": "multi3drefer", "question_type": "zt_w_d", "ann_id": 1, "object_id": []}
    predictions = [{"id": evaluation_id(r), "boxes": r["box"]} for r in records]
    assert score("multi3drefer", predictions, tmp_path / "multi3drefer_val_eval.json")["F1@0.5"] == 100.0


def test_scan2cap_val_best_proposal_and_dedup(tmp_path, scanrefer_val, gt_box_file):
    proposals = tmp_path / "scannet_val_pred_box.json"
    # IoU with object 0: 1.8 / 2.2 = 0.82 -> kept; with object 1: 2 / 6 = 0.33 -> below 0.5
    proposals.write_text(json.dumps({"scannet/scene0000_00": [[0.2, 2.5, 0.5, 2, 1, 1], [-2, 5.5, 1, 2, 1, 2]]}))
    files = build_scan2cap(scanrefer_val, BoxFile(gt_box_file), "val", BoxFile(proposals))
    records = files["scan2cap_val_llava_style.json"]
    assert len(records) == 5  # the two descriptions of object 0 become one record
    assert records[0]["conversations"] == [
        {"from": "human", "value": "<image> Given an object located at <coord> , describe the object in detail."},
        {"from": "gpt", "value": "This is a black chair. it is near the table."}]
    assert records[0]["box_input"] == [0.2, 2.5, 0.5, 2, 1, 1] and records[0]["gt_box"] == SCENE0_BOXES[0]
    assert records[0]["annotations"] == ["this is a black chair. it is near the table.", "a chair by the window."]
    assert [r["box_input"] for r in records[1:]] == [None] * 4
    assert records[2]["conversations"][1]["value"] == "A white kitchen cabinet."  # str.capitalize, as released
    assert records[2]["metadata"] == {"dataset": "scan2cap", "scene_id": "scene0000_00", "object_id": "3",
                                      "object_name": "kitchen_cabinet", "ann_id": "0"}
    predictions = [{"id": evaluation_id(r), "scene_id": r["metadata"]["scene_id"], "box": r["box_input"],
                    "caption": r["conversations"][1]["value"]} for r in records if r["box_input"] is not None]
    metrics = score("scan2cap", predictions, files["scan2cap_val_eval.json"], with_meteor=False)
    assert (metrics["num_objects"], metrics["num_unmatched"], metrics["num_proposals"]) == (5, 4, 1)
    train = build_scan2cap(scanrefer_val, BoxFile(gt_box_file), "train")["scan2cap_train_llava_style.json"]
    assert len(train) == 6 and all(r["box_input"] == r["gt_box"] for r in train) and "annotations" not in train[0]
    with pytest.raises(PrepareError, match=r"Scan2Cap val needs the proposals"):
        build_scan2cap(scanrefer_val, BoxFile(gt_box_file), "val")
    proposals.write_text(json.dumps({"scannet/scene0191_00": [[0, 0, 0, 1, 1, 1]]}))  # a train scene
    with pytest.raises(PrepareError, match=r"scannet_val_pred_box.json: scene scene0191_00 .* proposals for another split"):
        build_scan2cap(scanrefer_val, BoxFile(gt_box_file), "val", BoxFile(proposals))


SCANQA = [
    {"answers": ["brown", "dark brown"], "object_ids": [0], "object_names": ["chair"], "question": "What color is the chair?",
     "question_id": "train-scene0000-0", "scene_id": "scene0000_00"},
    {"answers": ["2"], "object_ids": [0, 1], "object_names": ["chair"], "question": "How many chairs are there?",
     "question_id": "train-scene0000-1", "scene_id": "scene0000_00"},
]


def test_scanqa_train_per_answer_val_first_answer(tmp_path):
    source = tmp_path / "ScanQA_v1.0_train.json"
    source.write_text(json.dumps(SCANQA))
    assert main(["prepare", "scanqa", str(source), "--out", str(tmp_path / "o")]) == 0
    train = load(tmp_path / "o" / "scanqa_train_llava_style.json")
    assert [r["id"] for r in train] == ["scanqa_train-scene0000-0_0", "scanqa_train-scene0000-0_1", "scanqa_train-scene0000-1_0"]
    assert train[1]["conversations"] == [{"from": "human", "value": "<image> What color is the chair? Answer the question simply."},
                                         {"from": "gpt", "value": "dark brown"}]
    assert train[1]["metadata"] == {"dataset": "scanQA", "question_type": "unknow", "question_id": "train-scene0000-0"}
    val_source = tmp_path / "ScanQA_v1.0_val.json"
    val_source.write_text(json.dumps(SCANQA))
    assert main(["prepare", "scanqa", str(val_source), "--out", str(tmp_path / "o")]) == 0
    val = load(tmp_path / "o" / "scanqa_val_llava_style.json")
    assert len(val) == 2 and val[0]["conversations"][1]["value"] == "brown"
    assert val[0]["metadata"]["answers"] == ["brown", "dark brown"]
    predictions = [{"id": evaluation_id(r), "answer": r["conversations"][1]["value"]} for r in val]
    assert score("scanqa", predictions, val_source, with_meteor=False)["EM"] == 100.0


def write_sqa3d(tmp_path, split):
    questions = tmp_path / f"v1_balanced_questions_{split}_scannetv2.json"
    annotations = tmp_path / f"v1_balanced_sqa_annotations_{split}_scannetv2.json"
    questions.write_text(json.dumps({"info": {}, "license": "", "data_type": "scannetv2", "data_subtype": split,
                                     "questions": [{"alternative_situation": ["I face the window.", "I sit on the bed."],
                                                    "question": "what is in front of me?", "question_id": 220602000000,
                                                    "scene_id": "scene0000_00", "situation": "I stand by the desk."}]}))
    annotations.write_text(json.dumps({"annotations": [{"answers": [{"answer": "table", "answer_confidence": "yes", "answer_id": 1}],
                                                        "question_id": 220602000000, "scene_id": "scene0000_00",
                                                        "answer_type": "other", "question_type": "N/A"}]}))
    return questions, annotations


def test_sqa3d_situations_and_eval(tmp_path):
    questions, annotations = write_sqa3d(tmp_path, "train")
    assert main(["prepare", "sqa3d", str(questions), str(annotations), "--out", str(tmp_path / "o")]) == 0
    train = load(tmp_path / "o" / "sqa3d_train_llava_style.json")
    assert [r["conversations"][0]["value"] for r in train] == [
        f"<image> {s} what is in front of me? Answer the question using a single word or phrase."
        for s in ("I face the window.", "I sit on the bed.", "I stand by the desk.")]
    assert train[0] == {**train[0], "id": 220602000000, "video": "scannet/scene0000_00",
                        "metadata": {"dataset": "sqa3d", "question_type": "what"}}
    questions, annotations = write_sqa3d(tmp_path, "test")
    assert main(["prepare", "sqa3d", str(questions), str(annotations), "--out", str(tmp_path / "o")]) == 0
    test = load(tmp_path / "o" / "sqa3d_test_llava_style.json")
    assert len(test) == 1 and test[0]["conversations"][1]["value"] == "table"
    predictions = [{"id": evaluation_id(r), "answer": "the table"} for r in test]
    assert score("sqa3d", predictions, [questions, annotations])["EM"] == 100.0


def test_mixture_lists_the_five_train_files(tmp_path, scanrefer_val, gt_box_file, label_map):
    out = tmp_path / "processed"
    assert main(["prepare", "mixture", str(out)]) == 1  # nothing prepared yet
    scanqa = tmp_path / "ScanQA_v1.0_train.json"
    scanqa.write_text(json.dumps(SCANQA))
    multi = tmp_path / "multi3drefer_train.json"
    multi.write_text(json.dumps([{"scene_id": "scene0001_00", "ann_id": 0, "description": "d", "object_ids": [0], "eval_type": "st_w_d"}]))
    boxes = ["--boxes", str(gt_box_file), "--split", "train", "--out", str(out)]
    for args in (["scanrefer", str(scanrefer_val), "--labels", str(label_map), *boxes], ["scan2cap", str(scanrefer_val), *boxes],
                 ["multi3drefer", str(multi), *boxes], ["scanqa", str(scanqa), "--out", str(out)],
                 ["sqa3d", *map(str, write_sqa3d(tmp_path, "train")), "--out", str(out)]):
        assert main(["prepare", *args]) == 0
    assert main(["prepare", "mixture", str(out)]) == 0
    mixture = yaml.safe_load((out / "multi.yaml").read_text())
    assert mixture == {"datasets": [{"json_path": f"{name}_train_llava_style.json", "sampling_strategy": "all"}
                                    for name in ("sqa3d", "scanqa", "scan2cap", "scanrefer_vg", "multi3drefer")]}
    assert main(["prepare", "verify", str(out)]) == 0
    scanqa.write_text(json.dumps(SCANQA[:1]))  # a stale / edited annotation file
    assert main(["prepare", "verify", str(out)]) == 1


def run_failing(args, capsys) -> str:
    assert main(["prepare", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_bad_inputs_one_line_nothing_written(tmp_path, scanrefer_val, gt_box_file, label_map, capsys):
    out = tmp_path / "out"
    common = ["--boxes", str(gt_box_file), "--labels", str(label_map), "--out", str(out)]
    broken = tmp_path / "ScanRefer_filtered_val.broken.json"
    broken.write_text('[{"scene_id": "scene0000_00",\n  "object_id": }]')
    assert "broken.json: not valid JSON (Expecting value at line 2)" in run_failing(["scanrefer", str(broken), *common], capsys)
    records = load(scanrefer_val)
    for bad, message in (
        (scanrefer_record("scene0000_00", 2, "table", 0, "a table."), "record #6: object id 2 is not among scene scene0000_00's boxes"),
        (scanrefer_record("scene0000_00", 9, "table", 0, "a table."), "record #6: object id 9 is not among scene scene0000_00's boxes"),
        (scanrefer_record("scene0999_00", 0, "table", 0, "a table."), "record #6: scene scene0999_00 has no boxes in"),
        ({"scene_id": "scene0000_00", "object_id": "0", "object_name": "chair", "ann_id": "5"}, "record #6: missing field(s) 'description'"),
    ):
        source = tmp_path / "ScanRefer_filtered_val.json"
        source.write_text(json.dumps([*records, bad]))
        assert message in run_failing(["scanrefer", str(source), *common], capsys)
        assert not out.exists()
    source.write_text(json.dumps([*records, scanrefer_record("scene0999_00", 0, "table", 0, "a table.")]))
    assert main(["prepare", "scanrefer", str(source), *common, "--skip-missing-scenes"]) == 0
    assert len(load(out / "scanrefer_vg_val_llava_style.json")) == 6
    assert "cannot tell the split" in run_failing(["scanqa", str(broken.with_name("qa.json")), "--out", str(out)], capsys)


def test_outputs_never_replace_inputs(tmp_path, scanrefer_val, gt_box_file, label_map):
    files = build_scanrefer(scanrefer_val, BoxFile(gt_box_file), read_label_map(label_map), "val")
    target = tmp_path / "scanrefer_vg_val_llava_style.json"
    target.write_text("user data")
    with pytest.raises(PrepareError, match=r"is one of the inputs; choose another --out"):
        write_prepared(tmp_path, "scanrefer", [target], {}, files)
    assert target.read_text() == "user data"


def test_malformed_box_file_and_field_types(tmp_path, scanrefer_val, gt_box_file):
    bad = tmp_path / "scannet_val_gt_box.json"
    for table in ({"scannet/scene0000_00": [[0, 0, 0, 1, 1]]}, {"scannet/scene0000_00": [["a", 0, 0, 1, 1, 1]]},
                  {"scannet/scene0000_00": 3}):
        bad.write_text(json.dumps(table))
        with pytest.raises(PrepareError, match=r"scannet_val_gt_box.json: scannet/scene0000_00: expected a list of \[cx"):
            BoxFile(bad)
    records = load(scanrefer_val)
    records[2]["description"] = ["not", "text"]
    scanrefer_val.write_text(json.dumps(records))
    with pytest.raises(PrepareError, match=r"record #2: 'description' must be a string"):
        build_scan2cap(scanrefer_val, BoxFile(gt_box_file), "train")
