"""The documented 3D chain, end to end on files in the official formats: `vega3d prepare` -> `vega3d train`
(tiny RANDOM-WEIGHT LLaVA-Video) -> `vega3d predict TASK` -> `vega3d eval`, on the procedural room (all
five tasks) and on the real scans of ../shared/data (ScanRefer and ScanQA)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import config_3d
from room3d import LABELS_TSV, SCENE

from vega3d.cli import main
from vega3d.evaluation.predictors3d import EMPTY_BOX
from vega3d.models import Vega3DLlavaVideoForConditionalGeneration
from vega3d.models.grounding import select_scanrefer
from vega3d.models.llava_prompts import inference_prompt
from vega3d.prepare import evaluation_id
from vega3d.prepare.synthetic_scan import room_boxes
from vega3d.training.scene_tasks import SceneVideos

TASK_FILES = {"scanrefer": "scanrefer_vg", "multi3drefer": "multi3drefer", "scan2cap": "scan2cap", "scanqa": "scanqa",
              "sqa3d": "sqa3d"}


def predict(task, model, data, out, scenes, boxes=None, frames=4):
    args = ["predict", task, "--model", str(model), "--data", str(data), "--out", str(out), "--scenes", str(scenes),
            "--num-frames", str(frames), "--max-new-tokens", "4", "--device", "cpu"]
    assert main(args + (["--boxes", str(boxes)] if boxes else [])) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def evaluate(task, predictions, *annotations, capsys) -> str:
    capsys.readouterr()
    extra = ["--no-meteor"] if task in ("scan2cap", "scanqa") else []
    assert main(["eval", task, "--predictions", str(predictions), "--annotations", *map(str, annotations), *extra]) == 0
    return capsys.readouterr().out.splitlines()[1]


def test_room_prepare_train_predict_eval(tmp_path, room3d, trained3d, capsys):
    processed, proposals = room3d["processed"], room3d["metadata"] / "scannet_val_pred_box.json"
    lines = {}
    for task, stem in TASK_FILES.items():
        data = processed / f"{stem}_val_llava_style.json"
        lines[task] = predict(task, trained3d, data, tmp_path / f"{task}.jsonl", room3d["scenes"],
                              proposals if task in ("scanrefer", "multi3drefer") else None)
        assert [line["id"] for line in lines[task]] == [evaluation_id(r) for r in json.loads(data.read_text())]
    found = room_boxes()[1:4]  # the proposals
    assert all(line["box"] in found for line in lines["scanrefer"])
    assert all(box in found for line in lines["multi3drefer"] for box in line["boxes"])
    captions = json.loads((processed / "scan2cap_val_llava_style.json").read_text())
    for record, line in zip(captions, lines["scan2cap"]):
        if record["box_input"] is None:  # no proposal with IoU >= 0.5: "" and a box that matches nothing
            assert line["caption"] == "" and line["box"] == EMPTY_BOX
        else:
            assert line["box"] == record["box_input"] and line["scene_id"] == SCENE
    assert sum(r["box_input"] is None for r in captions) == 2  # the wall and the box
    # the ScanRefer choice, recomputed with the model's forward and the selection rule
    model = Vega3DLlavaVideoForConditionalGeneration.from_pretrained(trained3d).eval()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(trained3d)
    video = SceneVideos(room3d["scenes"], 4, (56, 56))(SCENE)
    record = json.loads((processed / "scanrefer_vg_val_llava_style.json").read_text())[0]
    ids = torch.tensor([inference_prompt(tokenizer, record["conversations"][0]["value"], answer="<ground>")])
    with torch.no_grad():
        scores = model(input_ids=ids, attention_mask=torch.ones_like(ids), boxes=[torch.tensor(found)],
                       **{key: [value] for key, value in video.items()}).grounding_scores[0]
    assert lines["scanrefer"][0]["box"] == found[select_scanrefer(scores)]
    annotations = room3d["annotations"] / "val"
    assert evaluate("scanrefer", tmp_path / "scanrefer.jsonl", processed / "scanrefer_val_eval.json", capsys=capsys).startswith("ScanRefer\t")
    assert evaluate("multi3drefer", tmp_path / "multi3drefer.jsonl", processed / "multi3drefer_val_eval.json", capsys=capsys).startswith("Multi3DRefer\t")
    assert evaluate("scan2cap", tmp_path / "scan2cap.jsonl", processed / "scan2cap_val_eval.json", capsys=capsys).startswith("Scan2Cap\t")
    assert evaluate("scanqa", tmp_path / "scanqa.jsonl", annotations / "ScanQA_v1.0_val.json", capsys=capsys).startswith("ScanQA\t")
    assert evaluate("sqa3d", tmp_path / "sqa3d.jsonl", annotations / "v1_balanced_questions_val_scannetv2.json",
                    annotations / "v1_balanced_sqa_annotations_val_scannetv2.json", capsys=capsys).startswith("SQA3D\t")
    # a predictor given another task's records
    assert main(["predict", "scanqa", "--model", str(trained3d), "--data", str(processed / "sqa3d_val_llava_style.json"),
                 "--out", str(tmp_path / "wrong.jsonl"), "--scenes", str(room3d["scenes"])]) == 1
    assert "a sqa3d record; `vega3d predict scanqa` reads scanqa records" in capsys.readouterr().err


def test_real_scans_prepare_train_predict_eval(tmp_path, hololens_scene, tabletop_scene, tiny3d, capsys):
    scenes = tmp_path / "scenes"  # one folder of scene folders: links to the read-only real scans
    scenes.mkdir()
    for scene in (hololens_scene, tabletop_scene):
        (scenes / scene.name).symlink_to(scene, target_is_directory=True)
    boxes = {"scannet/hololens_office_000": [[0.0, 0.0, 1.5, 1.0, 1.0, 1.0], [1.0, 0.5, 2.0, 0.6, 0.6, 0.6]],
             "scannet/tabletop_000": [[0.0, 0.0, 0.5, 0.3, 0.3, 0.2], [0.2, 0.1, 0.6, 0.1, 0.1, 0.1]]}
    (tmp_path / "labels.tsv").write_text(LABELS_TSV)
    meta, processed = tmp_path / "metadata", tmp_path / "processed"
    meta.mkdir()
    for split in ("train", "val"):
        (meta / f"scannet_{split}_gt_box.json").write_text(json.dumps(boxes))
        (tmp_path / f"ScanRefer_filtered_{split}.json").write_text(json.dumps(
            [{"scene_id": scene, "object_id": str(k), "object_name": "table", "ann_id": "0", "description": f"object {k}.",
              "token": ["object"]} for scene in ("hololens_office_000", "tabletop_000") for k in range(2)]))
        (tmp_path / f"ScanQA_v1.0_{split}.json").write_text(json.dumps(
            [{"answers": ["a desk"], "object_ids": [0], "object_names": ["table"], "question": "What is there?",
              "question_id": f"{split}-{scene}-0", "scene_id": scene} for scene in ("hololens_office_000", "tabletop_000")]))
        for step in (["scanrefer", str(tmp_path / f"ScanRefer_filtered_{split}.json"), "--boxes", str(meta / f"scannet_{split}_gt_box.json"),
                      "--labels", str(tmp_path / "labels.tsv"), "--out", str(processed)],
                     ["scanqa", str(tmp_path / f"ScanQA_v1.0_{split}.json"), "--out", str(processed)]):
            assert main(["prepare", *step]) == 0
    (processed / "real.yaml").write_text(yaml.safe_dump({"datasets": [
        {"json_path": name, "sampling_strategy": "all"} for name in ("scanrefer_vg_train_llava_style.json", "scanqa_train_llava_style.json")]}))
    room = {"processed": processed, "scenes": scenes, "metadata": meta}
    config = config_3d(room, tiny3d, tmp_path / "run", max_steps=2)
    config["data"].update(train=str(processed / "real.yaml"), num_frames=2)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "train.yaml")]) == 0
    history = json.loads((tmp_path / "run" / "train_summary.json").read_text())["log_history"]
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in history if "loss" in entry)
    grounding = predict("scanrefer", tmp_path / "run", processed / "scanrefer_vg_val_llava_style.json", tmp_path / "scanrefer.jsonl",
                        scenes, meta / "scannet_val_gt_box.json", frames=2)
    assert all(line["box"] in boxes[f"scannet/{line['id'].split('|')[0]}"] for line in grounding)
    predict("scanqa", tmp_path / "run", processed / "scanqa_val_llava_style.json", tmp_path / "scanqa.jsonl", scenes, frames=2)
    row = evaluate("scanrefer", tmp_path / "scanrefer.jsonl", processed / "scanrefer_val_eval.json", capsys=capsys)
    assert row.startswith("ScanRefer\t")
    assert evaluate("scanqa", tmp_path / "scanqa.jsonl", tmp_path / "ScanQA_v1.0_val.json", capsys=capsys).startswith("ScanQA\t")
    # the proposals are the GT boxes (no two overlap): Acc@0.25 is the share of lines holding their own object's box
    right = [line["box"] == boxes[f"scannet/{line['id'].split('|')[0]}"][int(line["id"].split("|")[1])] for line in grounding]
    assert float(row.split("\t")[1]) == pytest.approx(100 * sum(right) / len(right), abs=0.05)
