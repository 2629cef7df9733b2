"""The five ScanNet tasks: published annotation files -> processed records in the released (LLaVA) layout.

Each builder takes the published files (read, never modified) and returns ``{file name: content}``:
``{task}_{split}_llava_style.json`` (the training / prediction records) and, for the grounding and
captioning val splits, ``{task}_{split}_eval.json`` (the ``{"annotations", "boxes"}`` input of
``vega3d eval``). Boxes are ``[cx, cy, cz, sx, sy, sz]`` in the axis-aligned scene frame.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from vega3d.evaluation.boxes import box_iou_3d
from vega3d.evaluation.sqa3d import question_type
from vega3d.io import write_json
from vega3d.prepare.boxes import check_split, scene_key
from vega3d.prepare.inputs import PrepareError, read_json, read_records, record_outputs

GROUNDING_PROMPT = "<image>Identify the object according to the following description.\n"
MULTI_TARGET_NOTE = "\nThere may be no corresponding object, or there may be one or more objects."
CAPTION_PROMPT = "<image> Given an object located at <coord> , describe the object in detail."
SCANQA_SUFFIX = " Answer the question simply."
SQA3D_SUFFIX = " Answer the question using a single word or phrase."
SCAN2CAP_IOU = 0.5
# NYU40 classes ScanRefer keeps apart; every other label (and a name missing from the map) is 39, "others".
SCANREFER_CLASSES = frozenset([*range(1, 13), 14, 16, 24, 28, 33, 34, 36, 39])
SCANREFER_FIELDS = ("scene_id", "object_id", "object_name", "ann_id", "description")
TRAIN_FILES = {  # the mixture of multi.yaml, in its order
    "sqa3d": "sqa3d_train_llava_style.json", "scanqa": "scanqa_train_llava_style.json",
    "scan2cap": "scan2cap_train_llava_style.json", "scanrefer": "scanrefer_vg_train_llava_style.json",
    "multi3drefer": "multi3drefer_train_llava_style.json",
}


def processed_name(task: str, split: str) -> str:
    return TRAIN_FILES[task].replace("_train_", f"_{split}_")


def _valid_boxes(boxes) -> bool:
    """A list of 6-number finite boxes, or ``null`` at ids without an object."""
    if not isinstance(boxes, list):
        return False
    present = [box for box in boxes if box is not None]
    if not all(isinstance(box, list) and len(box) == 6 for box in present):
        return False
    try:
        return bool(np.isfinite(np.asarray(present, dtype=np.float64)).all())
    except (TypeError, ValueError):
        return False


class BoxFile:
    """A ``scannet_{split}_{gt|pred}_box.json`` table; lookups name the record that asked."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.table = read_json(self.path, "box")
        if not isinstance(self.table, dict):
            raise PrepareError(f"{self.path}: expected {{\"scannet/sceneXXXX_XX\": [[cx, cy, cz, sx, sy, sz], ...]}}")
        for scene, boxes in self.table.items():
            if not _valid_boxes(boxes):
                raise PrepareError(f"{self.path}: {scene}: expected a list of [cx, cy, cz, sx, sy, sz] boxes (or null)")

    def has_scene(self, scene_id: str) -> bool:
        return scene_key(scene_id) in self.table

    def scene(self, scene_id: str, where: str) -> list:
        if not self.has_scene(scene_id):
            raise PrepareError(f"{where}: scene {scene_id} has no boxes in {self.path} (--skip-missing-scenes drops its records)")
        return self.table[scene_key(scene_id)]

    def box(self, scene_id: str, object_id, where: str) -> list[float]:
        boxes = self.scene(scene_id, where)
        try:
            index = int(object_id)
        except (TypeError, ValueError):
            raise PrepareError(f"{where}: object id {object_id!r} is not an integer") from None
        if not 0 <= index < len(boxes) or boxes[index] is None:
            raise PrepareError(f"{where}: object id {object_id} is not among scene {scene_id}'s boxes in {self.path}")
        return boxes[index]


def read_label_map(path: str | Path) -> dict[str, int]:
    """ScanNet ``scannetv2-labels.combined.tsv``: raw_category (column 1) -> nyu40id (column 4)."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: label map does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    mapping = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) < 5 or not row[4].strip().isdigit():
            raise PrepareError(f"{path} line {number}: expected raw_category in column 1 and an integer nyu40id in column 4")
        mapping[row[1]] = int(row[4])
    return mapping


def scanrefer_eval_types(records: list[dict], label_map: dict[str, int]) -> list[str]:
    """``unique`` when the target is the only annotated object of its (scene, NYU40 label) in the split."""
    labels = {}
    for record in records:
        nyu = label_map.get(str(record["object_name"]).replace("_", " "), 39)
        labels.setdefault((record["scene_id"], str(record["object_id"])), nyu if nyu in SCANREFER_CLASSES else 39)
    counts = Counter((scene, label) for (scene, _), label in labels.items())
    return ["unique" if counts[(r["scene_id"], labels[(r["scene_id"], str(r["object_id"]))])] == 1 else "multiple"
            for r in records]


def _kept(records, boxes: BoxFile, skip_missing: bool) -> list[tuple[int, dict]]:
    """``(position, record)`` of the records whose scene has boxes (all of them unless ``skip_missing``)."""
    return [(i, r) for i, r in enumerate(records) if not skip_missing or boxes.has_scene(r["scene_id"])]


def _turns(human: str, gpt: str) -> list[dict]:
    return [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]


def _eval_table(items) -> dict:
    """``vega3d eval``'s boxes table from ``(scene_id, object_id, box, label)``."""
    table: dict = {}
    for scene_id, object_id, box, label in items:
        table.setdefault(scene_id, {})[str(object_id)] = {"box": box, "label": label}
    return table


def build_scanrefer(path, boxes: BoxFile, label_map: dict[str, int], split: str, skip_missing: bool = False) -> dict:
    records = read_records(path, "ScanRefer", SCANREFER_FIELDS, texts=("scene_id", "object_name", "description"))
    eval_types = scanrefer_eval_types(records, label_map)
    processed, used = [], []
    for i, record in _kept(records, boxes, skip_missing):
        box = boxes.box(record["scene_id"], record["object_id"], f"{path}: record #{i}")
        processed.append({
            "id": i, "video": scene_key(record["scene_id"]),
            "conversations": _turns(GROUNDING_PROMPT + record["description"], "<ground>"), "box": box,
            "metadata": {"dataset": "scanrefer", "question_type": eval_types[i], "ann_id": record["ann_id"],
                         "object_id": str(record["object_id"])},
        })
        used.append((record, eval_types[i], box))
    files = {processed_name("scanrefer", split): processed}
    if split != "train":
        files[f"scanrefer_{split}_eval.json"] = {
            "annotations": [{**r, "eval_type": t} for r, t, _ in used],
            "boxes": _eval_table((r["scene_id"], r["object_id"], b, r["object_name"]) for r, _, b in used),
        }
    return files


def build_multi3drefer(path, boxes: BoxFile, split: str, skip_missing: bool = False) -> dict:
    records = read_records(path, "Multi3DRefer", ("scene_id", "ann_id", "description", "object_ids", "eval_type"),
                           texts=("scene_id", "description"))
    processed, used, table = [], [], []
    for i, record in _kept(records, boxes, skip_missing):
        where = f"{path}: record #{i}"
        if not isinstance(record["object_ids"], list):
            raise PrepareError(f"{where}: object_ids must be a list")
        targets = [boxes.box(record["scene_id"], o, where) for o in record["object_ids"]]
        processed.append({
            "id": i, "video": scene_key(record["scene_id"]),
            "conversations": _turns(GROUNDING_PROMPT + record["description"] + MULTI_TARGET_NOTE, "<ground>"),
            "box": targets,
            "metadata": {"dataset": "multi3drefer", "question_type": record["eval_type"], "ann_id": record["ann_id"],
                         "object_id": list(record["object_ids"])},
        })
        used.append(record)
        table += [(record["scene_id"], o, b, record.get("object_name")) for o, b in zip(record["object_ids"], targets)]
    files = {processed_name("multi3drefer", split): processed}
    if split != "train":
        files[f"multi3drefer_{split}_eval.json"] = {"annotations": used, "boxes": _eval_table(table)}
    return files


def best_proposal(proposals: list, target: list[float]):
    """The proposal with the highest IoU with ``target`` (the first among equals) if it reaches 0.5, else None."""
    if not proposals:
        return None
    ious = box_iou_3d(np.asarray(proposals, dtype=np.float64), np.asarray(target, dtype=np.float64))
    best = int(np.argmax(ious))
    return proposals[best] if ious[best] >= SCAN2CAP_IOU else None


def build_scan2cap(path, boxes: BoxFile, split: str, proposals: BoxFile | None = None, skip_missing: bool = False) -> dict:
    """Train: one record per description, ``box_input`` = the GT box. Other splits: one record per
    ``scene|object_id|object_name`` with all its descriptions in ``annotations``, ``box_input`` = the best
    proposal at IoU >= 0.5 or null."""
    records = read_records(path, "ScanRefer", SCANREFER_FIELDS, texts=("scene_id", "object_name", "description"))
    if split != "train" and proposals is None:
        raise PrepareError(f"{path}: Scan2Cap {split} needs the proposals (--proposals scannet_{split}_pred_box.json)")
    if proposals is not None:  # proposals must be of the boxes' split
        check_split(proposals.path, [key.removeprefix("scannet/") for key in proposals.table],
                    [key.removeprefix("scannet/") for key in boxes.table])
    groups: dict[str, list] = {}
    for i, record in _kept(records, boxes, skip_missing):
        gt = boxes.box(record["scene_id"], record["object_id"], f"{path}: record #{i}")
        key = str(i) if split == "train" else f"{record['scene_id']}|{record['object_id']}|{record['object_name']}"
        groups.setdefault(key, []).append((record, gt))
    processed = []
    for number, members in enumerate(groups.values()):
        record, gt = members[0]
        metadata = {"dataset": "scan2cap", "scene_id": record["scene_id"], "object_id": str(record["object_id"]),
                    "object_name": record["object_name"], "ann_id": record["ann_id"]}
        item = {"id": number, "video": scene_key(record["scene_id"]),
                "conversations": _turns(CAPTION_PROMPT, record["description"].capitalize())}
        if split == "train":
            item.update(box_input=gt, gt_box=gt, metadata=metadata)
        else:
            candidates = proposals.table.get(scene_key(record["scene_id"]), [])
            item.update(box_input=best_proposal(candidates, gt), gt_box=gt, metadata=metadata,
                        annotations=[m["description"] for m, _ in members])
        processed.append(item)
    files = {processed_name("scan2cap", split): processed}
    if split != "train":
        used = [pair for members in groups.values() for pair in members]
        files[f"scan2cap_{split}_eval.json"] = {
            "annotations": [r for r, _ in used],
            "boxes": _eval_table((r["scene_id"], r["object_id"], b, r["object_name"]) for r, b in used),
        }
    return files


def build_scanqa(path, split: str) -> dict:
    """Train: one record per answer (``scanqa_{qid}_{k}``); other splits: the first answer, all in metadata."""
    records = read_records(path, "ScanQA", ("question_id", "question", "scene_id"), texts=("question", "scene_id"))
    processed = []
    for i, record in enumerate(records):
        answers = record.get("answers", [])
        if not isinstance(answers, list) or (split == "train" and not answers):
            raise PrepareError(f"{path}: record #{i} ({record['question_id']}): needs a non-empty 'answers' list")
        human = f"<image> {record['question']}{SCANQA_SUFFIX}"
        metadata = {"dataset": "scanQA", "question_type": "unknow", "question_id": record["question_id"]}
        chosen = list(enumerate(answers)) if split == "train" else [(0, answers[0] if answers else "")]
        for k, answer in chosen:
            item = {"id": f"scanqa_{record['question_id']}_{k}", "video": scene_key(record["scene_id"]),
                    "conversations": _turns(human, answer), "metadata": dict(metadata)}
            if split != "train":
                item["metadata"]["answers"] = answers
            processed.append(item)
    return {processed_name("scanqa", split): processed}


def build_sqa3d(questions_path, annotations_path, split: str) -> dict:
    """One record per situation (train: the alternatives, then the situation; other splits: the situation)."""
    questions = read_records(questions_path, "SQA3D questions", ("question_id", "question", "situation", "scene_id"), "questions",
                             texts=("question", "situation", "scene_id"))
    answers = read_records(annotations_path, "SQA3D annotations", ("question_id", "answers"), "annotations")
    answer_of = {}
    for i, record in enumerate(answers):
        if not isinstance(record["answers"], list) or not record["answers"] or "answer" not in record["answers"][0]:
            raise PrepareError(f"{annotations_path}: record #{i} ({record['question_id']}): 'answers' needs an 'answer'")
        answer_of[record["question_id"]] = record["answers"][0]["answer"]
    processed = []
    for i, record in enumerate(questions):
        if record["question_id"] not in answer_of:
            raise PrepareError(f"{questions_path}: record #{i}: question {record['question_id']} has no answer in {annotations_path}")
        situations = [record["situation"]]
        if split == "train":
            alternatives = record.get("alternative_situation", [])
            if not isinstance(alternatives, list) or not all(isinstance(a, str) for a in alternatives):
                raise PrepareError(f"{questions_path}: record #{i}: 'alternative_situation' must be a list of strings")
            situations = [*alternatives, record["situation"]]
        for situation in situations:
            processed.append({
                "id": record["question_id"], "video": scene_key(record["scene_id"]),
                "conversations": _turns(f"<image> {situation} {record['question']}{SQA3D_SUFFIX}", answer_of[record["question_id"]]),
                "metadata": {"dataset": "sqa3d", "question_type": question_type(record["question"]).lower()},
            })
    return {processed_name("sqa3d", split): processed}


def mixture_yaml(out_dir: str | Path) -> str:
    """``multi.yaml``: the five train files, each ``sampling_strategy: "all"``; paths relative to the yaml."""
    missing = [name for name in TRAIN_FILES.values() if not (Path(out_dir) / name).is_file()]
    if missing:
        raise PrepareError(f"{Path(out_dir) / missing[0]}: missing; prepare every task's train split first")
    lines = ["datasets:"]
    for name in TRAIN_FILES.values():
        lines += [f"  - json_path: {name}", '    sampling_strategy: "all"']
    return "\n".join(lines) + "\n"


def write_prepared(out_dir, step: str, inputs: list, options: dict, files: dict) -> list[Path]:
    """Write every file (each atomically; all are built before the first is written), then the manifest."""
    out_dir = Path(out_dir)
    sources = {Path(path).resolve() for path in inputs}
    clash = next((name for name in files if (out_dir / name).resolve() in sources), None)
    if clash is not None:
        raise PrepareError(f"{out_dir / clash}: is one of the inputs; choose another --out (inputs are never overwritten)")
    written = [write_json(out_dir / name, content) for name, content in files.items()]
    counts = {name: len(c) if isinstance(c, list) else len(c.get("annotations", c)) for name, c in files.items()}
    record_outputs(out_dir, step, inputs, options, counts)
    return written


def evaluation_id(record: dict) -> str:
    """The ``id`` a prediction for this processed (val) record carries in ``vega3d eval``'s JSONL."""
    metadata, scene_id = record["metadata"], str(record["video"]).removeprefix("scannet/")
    dataset = metadata["dataset"]
    if dataset == "scanrefer":
        return f"{scene_id}|{metadata['object_id']}|{metadata['ann_id']}"
    if dataset == "multi3drefer":
        return f"{scene_id}|{metadata['ann_id']}"
    if dataset == "scan2cap":
        return f"{scene_id}|{metadata['object_id']}|{metadata['object_name']}"
    if dataset == "scanQA":
        return str(metadata["question_id"])
    return str(record["id"])  # sqa3d: the question id
