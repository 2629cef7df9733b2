"""3D training and prediction data: the processed ScanNet task records (``vega3d prepare``) -> what the
LLaVA-Video 3D model's forward takes (docs/training.md, 3D section).

* Records: a processed JSON list (``{task}_{split}_llava_style.json``), a JSONL of such records, or the
  mixture file ``multi.yaml`` (``datasets: [{json_path, sampling_strategy: "all"}]``, paths relative to it).
  Every record is checked when read; a bad one is an error naming ``file:line``.
* Scenes: a record's ``video`` (``scannet/scene0000_00``) names the folder ``scenes/scene0000_00``
  (posed_images or ScanNet export layout; with an EmbodiedScan info JSON from ``vega3d prepare scenes``,
  its frame list, axis alignment and intrinsics). Frames are sampled uniformly (fact 2), resized to the
  tower's input size, normalised with mean = std = 0.5 (fact 7); the per-pixel world coordinates are resized
  with nearest-neighbour (fact 6). ``generative_video`` (optional, as in the Qwen path's JSONL) names
  another scene folder whose frames (same sampling, same count) feed the generative backbone instead.
* Grounding (ScanRefer, Multi3DRefer): the proposals are the scene's boxes of the ``boxes`` file (GT boxes
  in training, fact 22; ``null`` ids are left out and the labels re-indexed), the targets
  ``metadata.object_id``; their token labels are all ignored (InfoNCE only, fact 24). Scan2Cap: the
  ``<coord>`` box is ``box_input``. Token ids and labels: ``vega3d.models.llava_prompts`` (facts 17-21).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vega3d.io import read_jsonl
from vega3d.models.clips import Clip
from vega3d.models.llava_prompts import IGNORE_INDEX, training_example
from vega3d.prepare.tasks import BoxFile
from vega3d.scenes import load_scene, sample_frames
from vega3d.training.sampler import TASK_IDS, task_grouping

GROUNDING_TASKS = ("scanrefer", "multi3drefer")
MIXTURE_STRATEGY = "all"


@dataclass
class TaskRecord:
    record: dict
    where: str  # "file:line", for errors

    @property
    def task(self) -> str:
        return str(self.record["metadata"]["dataset"]).lower()

    @property
    def scene(self) -> str:
        return str(self.record["video"]).removeprefix("scannet/")

    @property
    def generative_scene(self) -> str | None:
        other = self.record.get("generative_video")
        return None if other is None else str(other).removeprefix("scannet/")


def _json_list(path: Path) -> list[tuple[int, object]]:
    """``(line, item)`` of a JSON list file: each item's starting line, for error messages."""
    text = path.read_text()
    decoder, items = json.JSONDecoder(), []
    try:
        position = text.index("[") + 1
        while True:
            while text[position] in " \t\r\n,":
                position += 1
            if text[position] == "]":
                return items
            item, end = decoder.raw_decode(text, position)
            items.append((text.count("\n", 0, position) + 1, item))
            position = end
    except (ValueError, IndexError) as error:
        line = text.count("\n", 0, getattr(error, "pos", len(text))) + 1
        raise ValueError(f"{path}:{line}: not a JSON list of records ({getattr(error, 'msg', error)})") from None


def _records_of_file(path: Path) -> list[tuple[int, object]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such record file")
    if path.suffix.lower() != ".jsonl":
        return _json_list(path)
    return list(read_jsonl(path))


def mixture_files(path: Path) -> list[Path]:
    """The record files of a ``multi.yaml`` mixture (every entry ``sampling_strategy: "all"``)."""
    import yaml

    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: cannot parse ({error})") from None
    entries = content.get("datasets") if isinstance(content, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected 'datasets:' with a list of {{json_path, sampling_strategy}}")
    files = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or "json_path" not in entry:
            raise ValueError(f"{path}: dataset {number} has no json_path")
        if entry.get("sampling_strategy", MIXTURE_STRATEGY) != MIXTURE_STRATEGY:
            raise ValueError(f"{path}: dataset {number}: sampling_strategy {entry['sampling_strategy']!r} is not supported "
                             f"(only {MIXTURE_STRATEGY!r}, as in the released multi.yaml)")
        files.append(path.parent / entry["json_path"])
    return files


def check_record(record, where: str) -> None:
    """The fields training and prediction read; anything else in the record is left alone."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a record must be a JSON object")
    for key in ("video", "conversations", "metadata"):
        if key not in record:
            raise ValueError(f"{where}: missing key {key!r}")
    dataset = str(record["metadata"].get("dataset", "")).lower() if isinstance(record["metadata"], dict) else ""
    if dataset not in TASK_IDS:
        raise ValueError(f"{where}: metadata.dataset {dataset!r} is not one of {', '.join(TASK_IDS)}")
    turns = record["conversations"]
    if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns):
        raise ValueError(f"{where}: conversations must be a list of {{from, value}} turns")
    if dataset in GROUNDING_TASKS:
        ids = record["metadata"].get("object_id")
        ids = ids if isinstance(ids, list) else [ids]
        try:
            [int(i) for i in ids]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: metadata.object_id must be object id(s); got {record['metadata'].get('object_id')!r}") from None


def read_task_records(path: str | Path) -> list[TaskRecord]:
    """Every record of a mixture (``.yaml``), processed JSON list or JSONL, checked, in file order."""
    path = Path(path)
    files = mixture_files(path) if path.suffix.lower() in (".yaml", ".yml") else [path]
    records = []
    for file in files:
        for line, record in _records_of_file(file):
            where = f"{file}:{line}"
            check_record(record, where)
            records.append(TaskRecord(record, where))
    if not records:
        raise ValueError(f"{path}: no records")
    return records


class SceneVideos:
    """A scene's model inputs, sampled once per scene (a few scenes kept in memory)."""

    def __init__(self, scenes: str | Path, num_frames: int, image_size: tuple[int, int], info: str | Path | None = None,
                 generative=None, keep: int = 4):
        from vega3d.scenes.embodiedscan import read_converted_info

        self.scenes, self.num_frames, self.image_size = Path(scenes), num_frames, tuple(image_size)
        self.info = read_converted_info(info) if info is not None else None
        self.generative, self.keep = generative, keep
        self._cache: OrderedDict[str, dict] = OrderedDict()

    def folder(self, scene: str, where: str) -> Path:
        folder = self.scenes / scene
        if not folder.is_dir():
            raise FileNotFoundError(f"{where}: scene folder {folder} does not exist")
        if self.info is not None and scene not in self.info:
            raise ValueError(f"{where}: scene {scene!r} is not in the EmbodiedScan info file")
        return folder

    def frames(self, scene: str, where: str):
        info = None if self.info is None else self.info[scene]
        return sample_frames(load_scene(self.folder(scene, where), info=info), self.num_frames, self.image_size)

    def __call__(self, scene: str, where: str = "record", generative_scene: str | None = None) -> dict:
        key = (scene, generative_scene)
        if key not in self._cache:
            frames = self.frames(scene, where)
            world = F.interpolate(frames.world.permute(0, 3, 1, 2), size=self.image_size, mode="nearest").permute(0, 2, 3, 1)
            item = {"pixel_values_videos": (frames.images - 0.5) / 0.5, "world_coords": world.contiguous()}
            if self.generative is not None:
                source = frames if generative_scene is None else self.frames(generative_scene, where)
                clip = Clip(source.scene_id, source.images, source.frame_indices, source.frame_ids, source.sampling,
                            source.cameras)  # camera-conditioned backbones read the poses
                item["generative_tokens"] = self.generative.tokens(clip)
            self._cache[key] = item
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return self._cache[key]


def proposals(boxes: BoxFile, record: TaskRecord) -> tuple[torch.Tensor, list[int]]:
    """The scene's boxes without ``null`` ids, and the record's targets as positions among them."""
    table = boxes.scene(record.scene, record.where)
    present = [i for i, box in enumerate(table) if box is not None]
    ids = record.record["metadata"]["object_id"]
    position = {object_id: k for k, object_id in enumerate(present)}
    targets = []
    for object_id in (ids if isinstance(ids, list) else [ids]):
        if int(object_id) not in position:
            raise ValueError(f"{record.where}: object id {object_id} has no box in {boxes.path} for scene {record.scene}")
        targets.append(position[int(object_id)])
    return torch.tensor(np.asarray([table[i] for i in present], dtype=np.float32)).reshape(-1, 6), targets


class SceneTaskDataset(torch.utils.data.Dataset):
    """The five-task mixture for the 3D model; ``task_grouping`` feeds the task-grouped sampler (fact 27)."""

    def __init__(self, records: list[TaskRecord], tokenizer, videos: SceneVideos, boxes: str | Path | None = None,
                 spatial_instruction: bool = True):
        self.records, self.tokenizer, self.videos = records, tokenizer, videos
        self.spatial_instruction = spatial_instruction
        self.boxes = BoxFile(boxes) if boxes is not None else None
        for record in records:  # fail before training starts, not hours into it
            videos.folder(record.scene, record.where)
            if record.generative_scene is not None:
                videos.folder(record.generative_scene, record.where)
            if record.task in GROUNDING_TASKS:
                if self.boxes is None:
                    raise ValueError(f"{record.where}: a {record.task} record needs the boxes file (data.boxes)")
                proposals(self.boxes, record)
            if record.task == "scan2cap" and record.record.get("box_input") is None:
                raise ValueError(f"{record.where}: a scan2cap training record needs box_input (the <coord> box)")
        self.task_grouping = task_grouping([r.record for r in records])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        try:
            ids, labels = training_example(self.tokenizer, record.record["conversations"], self.spatial_instruction)
        except ValueError as error:
            raise ValueError(f"{record.where}: {error}") from None
        item = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), **self.videos(record.scene, record.where, record.generative_scene),
                "boxes": None, "object_labels": [], "coord_boxes": None}
        if record.task in GROUNDING_TASKS:
            item["boxes"], item["object_labels"] = proposals(self.boxes, record)
            item["labels"] = torch.full_like(item["labels"], IGNORE_INDEX)  # InfoNCE only (fact 24)
        if record.task == "scan2cap":
            item["coord_boxes"] = torch.tensor(record.record["box_input"], dtype=torch.float32)
        return item


def collate_scene_tasks(items: list[dict], pad_token_id: int) -> dict:
    """Right-pad the token sequences; every video input stays a per-sample list."""
    length = max(len(item["input_ids"]) for item in items)

    def pad(key, value):
        return torch.stack([F.pad(item[key], (0, length - len(item[key])), value=value) for item in items])

    batch = {"input_ids": pad("input_ids", pad_token_id), "labels": pad("labels", IGNORE_INDEX),
             "attention_mask": torch.stack([(torch.arange(length) < len(item["input_ids"])).long() for item in items])}
    for key in ("pixel_values_videos", "world_coords", "generative_tokens", "object_labels", "coord_boxes"):
        if key in items[0]:
            batch[key] = [item[key] for item in items]
    if any(item["boxes"] is not None for item in items):
        batch["boxes"] = [item["boxes"] for item in items]
    return batch
