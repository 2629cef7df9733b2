"""The procedural room as a tiny ScanNet release: raw scan files, rendered posed images and the five tasks'
annotation files in their official formats, prepared with `vega3d prepare` (train and val), plus a tiny
RANDOM-WEIGHT LLaVA-Video 3D model saved in our layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vega3d.cli import main
from vega3d.prepare.synthetic_scan import ROOM_LABELS, room_boxes, write_room_scan
from vega3d.scenes.synthetic import render_synthetic_scene

SCENE = "scene0000_00"
IMAGE_SIZE = 56
LABELS_TSV = "id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\n1\ttable\ttable\t9\t7\t5\ttable\n"


def write_annotations(folder: Path, split: str) -> dict[str, list[Path]]:
    """One small file per task, in the published formats."""
    folder.mkdir(parents=True, exist_ok=True)
    scanrefer = [{"scene_id": SCENE, "object_id": str(k), "object_name": name, "ann_id": "0",
                  "description": f"the {name} in the room.", "token": ["the", name]} for k, name in enumerate(ROOM_LABELS)]
    multi = [{"scene_id": SCENE, "ann_id": k, "description": text, "object_ids": ids, "eval_type": kind}
             for k, (text, ids, kind) in enumerate([("the table and the cabinet.", [1, 2], "mt"), ("a sofa.", [], "zt_wo_d"),
                                                    ("the crate.", [3], "st_wo_d")])]
    scanqa = [{"answers": ["white"], "object_ids": [1], "object_names": ["table"], "question": "What color is the table?",
               "question_id": f"{split}-{SCENE}-0", "scene_id": SCENE},
              {"answers": ["one"], "object_ids": [2], "object_names": ["cabinet"], "question": "How many cabinets?",
               "question_id": f"{split}-{SCENE}-1", "scene_id": SCENE}]
    questions = {"questions": [{"alternative_situation": ["I face the wall."], "question": "what is in front of me?",
                                "question_id": 1000 + k, "scene_id": SCENE, "situation": "I stand by the table."} for k in range(2)]}
    answers = {"annotations": [{"answers": [{"answer": "table", "answer_confidence": "yes", "answer_id": 1}],
                                "question_id": 1000 + k, "scene_id": SCENE} for k in range(2)]}
    files = {"scanrefer": {f"ScanRefer_filtered_{split}.json": scanrefer}, "multi3drefer": {f"multi3drefer_{split}.json": multi},
             "scanqa": {f"ScanQA_v1.0_{split}.json": scanqa},
             "sqa3d": {f"v1_balanced_questions_{split}_scannetv2.json": questions,
                       f"v1_balanced_sqa_annotations_{split}_scannetv2.json": answers}}
    written = {}
    for task, contents in files.items():
        written[task] = []
        for name, content in contents.items():
            (folder / name).write_text(json.dumps(content))
            written[task].append(folder / name)
    return written


def prepare_room(root: Path, frames: int = 4) -> dict[str, Path]:
    """Scan + images + boxes + proposals + the five tasks (train and val/test) + the mixture, via the CLI."""
    write_room_scan(root / "scans", SCENE, np.eye(4))
    render_synthetic_scene(root / "posed_images" / SCENE, num_frames=frames, size=(IMAGE_SIZE, IMAGE_SIZE))
    (root / "scenes.txt").write_text(f"{SCENE}\n")
    (root / "labels.tsv").write_text(LABELS_TSV)
    meta, processed = root / "metadata", root / "processed"
    (root / "mask3d.json").write_text(json.dumps({SCENE: room_boxes()[1:4]}))  # three objects found
    steps = [["proposals", str(root / "mask3d.json"), "--split", "val", "--scenes", str(root / "scenes.txt"), "--out", str(meta)]]
    for split in ("train", "val"):
        steps.append(["boxes", str(root / "scans"), "--scenes", str(root / "scenes.txt"), "--split", split, "--out", str(meta)])
        files = write_annotations(root / "annotations" / split, split)
        boxes = ["--boxes", str(meta / f"scannet_{split}_gt_box.json")]
        proposals = ["--proposals", str(meta / "scannet_val_pred_box.json")] if split == "val" else []
        steps += [["scanrefer", str(files["scanrefer"][0]), *boxes, "--labels", str(root / "labels.tsv"), "--out", str(processed)],
                  ["multi3drefer", str(files["multi3drefer"][0]), *boxes, "--out", str(processed)],
                  ["scan2cap", str(files["scanrefer"][0]), *boxes, *proposals, "--out", str(processed)],
                  ["scanqa", str(files["scanqa"][0]), "--out", str(processed)],
                  ["sqa3d", *map(str, files["sqa3d"]), "--out", str(processed)]]
    steps.append(["mixture", str(processed)])
    for step in steps:
        assert main(["prepare", *step]) == 0, step
    return {"root": root, "scenes": root / "posed_images", "metadata": meta, "processed": processed,
            "annotations": root / "annotations"}


def save_tiny_3d(folder: Path, seed: int = 0) -> Path:
    from vega3d.models.llava_tiny import build_tiny_llava

    model, tokenizer = build_tiny_llava(grounding={"seed": seed}, seed=seed, image_size=IMAGE_SIZE)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
