"""Training data: JSONL conversations over scene folders, videos or frame folders (VG-LLM / LLaVA style).

One JSON object per line::

    {"id": "q0", "video": "scenes/posed_images/hololens_office_000",
     "conversations": [{"from": "human", "value": "<video>\\nIs the desk left of the door?"},
                       {"from": "gpt", "value": "yes"}]}

``video`` is relative to the data root (or absolute); ``<video>`` marks where the frames go (once per
record). ``generative_video`` (optional) feeds the generative backbone other frames of the same
sampling (same count) instead of ``video``'s frames. Roles: ``human``/``user`` and ``gpt``/``assistant``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vega3d.io import read_jsonl
from vega3d.models.clips import Clip, load_clip, load_released_clip
from vega3d.models.generative import GenerativeSource
from vega3d.models.inputs import IGNORE_INDEX, QwenInputs, frames_as_images

VIDEO_MARK = "<video>"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


@dataclass
class Record:
    id: str
    video: Path
    messages: list[dict]
    generative_video: Path | None = None
    video_id: str | None = None  # identity in the feature store (see clip_id)
    generative_video_id: str | None = None


def to_messages(conversations: list[dict], where: str) -> list[dict]:
    """LLaVA turns -> chat messages; the ``<video>`` mark becomes a video item at the same position."""
    messages, marks = [], 0
    for turn in conversations:
        role = ROLES.get(turn.get("from") or turn.get("role"))
        value = turn.get("value", turn.get("content"))
        if role is None or not isinstance(value, str):
            raise ValueError(f"{where}: each turn needs 'from' in {sorted(ROLES)} and a string 'value'; got {turn!r}")
        pieces = value.split(VIDEO_MARK)
        marks += len(pieces) - 1
        content = [{"type": "text", "text": pieces[0].strip("\n")}] if pieces[0].strip() else []
        for piece in pieces[1:]:
            content.append({"type": "video"})
            if piece.strip():
                content.append({"type": "text", "text": piece.strip("\n")})
        messages.append({"role": role, "content": content if role != "assistant" else value})
    if marks != 1:
        raise ValueError(f"{where}: the conversation must contain exactly one {VIDEO_MARK} mark; found {marks}")
    if not any(message["role"] == "assistant" for message in messages):
        raise ValueError(f"{where}: no assistant turn ('from': 'gpt'): the record has nothing to learn")
    return messages


def clip_id(video: str, root: Path) -> str:
    """A clip's identity in the feature store: its path relative to the data root (``a/scene0``), so two
    videos of the same name in different folders never share stored features."""
    path = Path(video)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(root.resolve())
        except ValueError:
            path = Path(*path.parts[1:])
    return path.as_posix().strip("/")


def _existing(root: Path, video: str, where: str, key: str) -> Path:
    path = root / video
    if not path.exists():
        raise FileNotFoundError(f"{where}: {key} {path}: no such scene folder, video or frame folder")
    return path


def read_records(path: str | Path, root: str | Path | None = None) -> list[Record]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: training data file (JSONL) not found")
    root = Path(root) if root is not None else path.parent
    records = []
    for number, item in read_jsonl(path):
        where = f"{path}:{number}"
        for key in ("video", "conversations"):
            if key not in item:
                raise ValueError(f"{where}: missing key {key!r}")
        gen = item.get("generative_video")
        messages = to_messages(item["conversations"], where)
        records.append(Record(str(item.get("id", number)), _existing(root, item["video"], where, "video"), messages,
                              _existing(root, gen, where, "generative_video") if gen else None,
                              clip_id(item["video"], root), clip_id(gen, root) if gen else None))
    if not records:
        raise ValueError(f"{path}: no records")
    return records


class ConversationDataset(torch.utils.data.Dataset):
    """Tokenised conversations with their video inputs and, with a source, their generative tokens."""

    def __init__(self, records: list[Record], inputs: QwenInputs, num_frames: int, image_size=(384, 384),
                 generative: GenerativeSource | None = None):
        self.records, self.inputs, self.generative = records, inputs, generative
        # A branch that fuses images (the released pipeline) trains on its inputs: frames as 518-wide images.
        self.as_images = generative is not None and generative.settings.visual_input == "images"
        self.num_frames, self.image_size = num_frames, image_size
        self._clips: dict[Path, Clip] = {}  # questions share scenes: read and sample each source once
        self._videos: dict[Path, dict] = {}  # ... and run the image/video processor once (no augmentation: same output)
        self._examples: dict[int, dict] = {}  # ... and tokenise each conversation once (every epoch reads it again)

    def __len__(self) -> int:
        return len(self.records)

    def clip(self, path: Path, scene_id: str | None = None) -> Clip:
        if path not in self._clips:
            if self.as_images:
                self._clips[path] = load_released_clip(path, self.num_frames, scene_id=scene_id)
            else:
                self._clips[path] = load_clip(path, self.num_frames, self.image_size, scene_id=scene_id)
        return self._clips[path]

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        if index not in self._examples:
            clip = self.clip(record.video, record.video_id)
            if record.video not in self._videos:
                self._videos[record.video] = self.inputs.images(clip.images) if self.as_images else self.inputs.video(clip.images)
            messages = frames_as_images(record.messages, len(clip.images)) if self.as_images else record.messages
            example = self.inputs.example(messages, self._videos[record.video])
            self._examples[index] = {key: example[key][0] for key in ("input_ids", "attention_mask", "mm_token_type_ids", "labels")}
            self._examples[index].update({key: example[key] for key in VISUAL_KEYS if key in example})
        item = dict(self._examples[index])
        if self.generative is not None:  # generative_video: same sampling (frame count) of other frames
            other = (record.generative_video, record.generative_video_id) if record.generative_video else (record.video, record.video_id)
            item["generative_tokens"] = self.generative.tokens(self.clip(*other))
        return item


VISUAL_KEYS = ("pixel_values_videos", "video_grid_thw", "pixel_values", "image_grid_thw")


def collate(items: list[dict], pad_token_id: int) -> dict:
    """Right-pad the token sequences; concatenate the videos (or images); keep one generative tensor per
    video (per sample for images)."""
    length = max(len(item["input_ids"]) for item in items)

    def pad(key, value):
        return torch.stack([torch.nn.functional.pad(item[key], (0, length - len(item[key])), value=value) for item in items])

    batch = {
        "input_ids": pad("input_ids", pad_token_id),
        "attention_mask": pad("attention_mask", 0),
        "mm_token_type_ids": pad("mm_token_type_ids", 0),
        "labels": pad("labels", IGNORE_INDEX),
        **{key: torch.cat([item[key] for item in items]) for key in VISUAL_KEYS if key in items[0]},
    }
    if "generative_tokens" in items[0]:
        batch["generative_tokens"] = [item["generative_tokens"] for item in items]
    return batch
