"""Model inputs for a Qwen2.5-VL video conversation, built with the checkpoint's own tokenizer,
chat template and image processor.

transformers' Qwen2.5-VL video processor imports torchvision (not installable with this torch), and
``Qwen2_5_VLProcessor`` refuses to be built without a video processor. Everything it does for a video is
reproduced from its parts: each frame goes through the (PIL) image processor with temporal patch 1 —
resize to a multiple of 28 px, rescale, CLIP normalisation, patchify in Qwen's merge order — and pairs of
consecutive frames are stacked into temporal patches of 2 (an odd clip repeats its last frame, as Qwen's
video processor does). The ``<|video_pad|>`` placeholder is expanded to ``t*h*w/4`` tokens and
``mm_token_type_ids`` marks them (2 = video), exactly as the processor would.

Frames can also enter as independent images (:meth:`QwenInputs.images`, the released spatial-reasoning
path): each frame is one ``<|image_pad|>`` image of grid ``(1, H/14, W/14)``, its patch duplicated to the
temporal patch of 2 by the image processor.

Qwen3-VL (``per_group_video``) writes a video as one ``<t seconds><|vision_start|>...<|vision_end|>``
segment per temporal group, as its processor does; ``t`` is the group's mean frame position at
``video_fps`` frames per second (frame k at k / fps).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer

from vega3d.backbones import check_frames

VIDEO_TOKEN = "<|video_pad|>"
IMAGE_TOKEN = "<|image_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
PER_GROUP_VIDEO_MODELS = ("qwen3_vl", "vega3d_qwen3_vl")
IGNORE_INDEX = -100


class QwenInputs:
    """Tokenizer + image processor of a Qwen2.5-VL checkpoint, turning (messages, frames) into model inputs."""

    def __init__(self, tokenizer, image_processor, per_group_video: bool = False, video_fps: float = 1.0):
        if not tokenizer.chat_template:
            raise ValueError("the tokenizer has no chat template (chat_template.jinja in the checkpoint folder)")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.merge_size = image_processor.merge_size
        self.temporal_patch_size = image_processor.temporal_patch_size
        self.per_group_video, self.video_fps = per_group_video, float(video_fps)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "QwenInputs":
        tokenizer = AutoTokenizer.from_pretrained(path)
        legacy = Path(path) / "chat_template.json"  # older Qwen2.5-VL folders keep the template beside the processor
        if not tokenizer.chat_template and legacy.is_file():
            tokenizer.chat_template = json.loads(legacy.read_text())["chat_template"]
        config = Path(path) / "config.json"
        model_type = json.loads(config.read_text()).get("model_type") if config.is_file() else None
        return cls(tokenizer, AutoImageProcessor.from_pretrained(path), per_group_video=model_type in PER_GROUP_VIDEO_MODELS)

    def save_pretrained(self, path: str | Path) -> None:
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)

    def images(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frames ``[T, 3, H, W]`` in [0, 1] as T images -> ``pixel_values`` and ``image_grid_thw`` ``[T, 3]``."""
        out = self.image_processor(images=_pil_frames(frames), return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    def video(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frames ``[T, 3, H, W]`` in [0, 1] -> ``pixel_values_videos`` and ``video_grid_thw`` ``[1, 3]``."""
        images = _pil_frames(frames)
        per_frame = self.image_processor(images=images, temporal_patch_size=1, return_tensors="pt")
        _, grid_h, grid_w = (int(x) for x in per_frame["image_grid_thw"][0])
        patches = per_frame["pixel_values"].reshape(len(images), grid_h * grid_w, -1)
        tps = self.temporal_patch_size
        if pad := -len(images) % tps:
            patches = torch.cat([patches, patches[-1:].expand(pad, -1, -1)])
        t = patches.shape[0] // tps
        # [t, tps, N, C*p*p] -> [t, N, C, tps, p*p]: Qwen's patch vector is (channel, time, row, column)
        patches = patches.reshape(t, tps, grid_h * grid_w, 3, -1).permute(0, 2, 3, 1, 4)
        return {
            "pixel_values_videos": patches.reshape(t * grid_h * grid_w, -1).contiguous(),
            "video_grid_thw": torch.tensor([[t, grid_h, grid_w]], dtype=torch.long),
        }

    def num_video_tokens(self, grid_thw) -> int:
        return int(torch.as_tensor(grid_thw).prod()) // self.merge_size**2

    def _video_segments(self, grid_thw) -> str:
        t, h, w = (int(x) for x in grid_thw)
        tokens = VIDEO_TOKEN * (h * w // self.merge_size**2)
        tps = self.temporal_patch_size
        return "".join(f"<{(g * tps + (tps - 1) / 2) / self.video_fps:.1f} seconds>{VISION_START}{tokens}{VISION_END}"
                       for g in range(t))

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def _ids(self, text: str, grids: dict[str, list]) -> list[int]:
        """Tokenize ``text``, expanding its k-th ``<|video_pad|>`` (``<|image_pad|>``) to video (image) k's
        token count (consumes ``grids``: placeholder -> remaining grids)."""
        expanded = ""
        if self.per_group_video:  # the whole segment is rewritten, one per temporal group
            text = text.replace(VISION_START + VIDEO_TOKEN + VISION_END, VIDEO_TOKEN)
        for piece in re.split(f"({re.escape(VIDEO_TOKEN)}|{re.escape(IMAGE_TOKEN)})", text):
            if piece in grids:
                if not grids[piece]:
                    raise ValueError(f"the conversation has more {piece} placeholders than {_KIND[piece]}s")
                grid = grids[piece].pop(0)
                if piece == VIDEO_TOKEN and self.per_group_video:
                    piece = self._video_segments(grid)
                else:
                    piece *= self.num_video_tokens(grid)
            expanded += piece
        return self.tokenizer(expanded, add_special_tokens=False)["input_ids"]

    def _batch(self, ids: list[int], video: dict, labels: list[int] | None = None) -> dict[str, torch.Tensor]:
        input_ids = torch.tensor([ids], dtype=torch.long)
        batch = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_token_type_ids": (input_ids == self.video_token_id).long() * 2 + (input_ids == self.image_token_id).long(),
            **video,
        }
        if labels is not None:
            batch["labels"] = torch.tensor([labels], dtype=torch.long)
        return batch

    def prompt(self, messages: list[dict], video: dict) -> dict[str, torch.Tensor]:
        """Inputs for ``generate``: the conversation so far plus the assistant prompt (batch of one).
        ``video``: the output of :meth:`video` or :meth:`images`."""
        grids = _grids(video)
        ids = self._ids(self.render(messages, add_generation_prompt=True), grids)
        self._check_all_used(grids)
        return self._batch(ids, video)

    def example(self, messages: list[dict], video: dict) -> dict[str, torch.Tensor]:
        """Training inputs: ``labels`` are the assistant turns' tokens (their ``<|im_end|>`` included), -100 elsewhere."""
        grids = _grids(video)
        ids, labels, done = [], [], ""
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prefix, upto = self.render(messages[:i], add_generation_prompt=True), self.render(messages[: i + 1])
            if not (prefix.startswith(done) and upto.startswith(prefix)):
                raise ValueError("the chat template does not render conversations as growing prefixes; cannot mask labels")
            context = self._ids(prefix[len(done):], grids)
            answer = self._ids(upto[len(prefix):], grids)
            ids += context + answer
            labels += [IGNORE_INDEX] * len(context) + answer
            done = upto
        if not done:
            raise ValueError("the conversation has no assistant turn to learn from")
        self._check_all_used(grids)
        return self._batch(ids, video, labels)

    @staticmethod
    def _check_all_used(grids: dict[str, list]) -> None:
        for token, left in grids.items():
            if left:
                raise ValueError(f"{len(left)} {_KIND[token]}(s) have no {token} placeholder in the conversation")


_KIND = {VIDEO_TOKEN: "video", IMAGE_TOKEN: "image"}
SYSTEM_PROMPT = "You are a helpful assistant."  # the released spatial-reasoning evaluation's system message


def frames_as_images(messages: list[dict], num_frames: int) -> list[dict]:
    """The released conversation form: the system prompt first, each video item replaced by ``num_frames``
    image items (the frames as independent images)."""
    out = [] if messages and messages[0]["role"] == "system" else [{"role": "system", "content": SYSTEM_PROMPT}]
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [part for item in content for part in ([{"type": "image"}] * num_frames if item.get("type") == "video" else [item])]
        out.append({**message, "content": content})
    return out


def _grids(visual: dict) -> dict[str, list]:
    return {VIDEO_TOKEN: list(visual.get("video_grid_thw", [])), IMAGE_TOKEN: list(visual.get("image_grid_thw", []))}


def _pil_frames(frames: torch.Tensor) -> list[Image.Image]:
    check_frames(frames)
    pixels = (frames.detach().float().cpu().permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
    return [Image.fromarray(p) for p in pixels]
