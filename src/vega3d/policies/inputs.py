"""Policy inputs: OpenVLA's image preprocessing and the OFT prompt with action placeholders.

Images (REFERENCE-VLA F1.7-F1.9): each camera image is resized to the model's size (PIL bicubic; resize-naive,
no letterbox), scaled to [0, 1] and normalised once per featurizer with the ``tvf_normalize_params`` stored in
``preprocessor_config.json`` (stored values win, as in HF's ``ImageProcessingMixin``); the normalised copies
are stacked on the channel axis (DINO first) and the images of one sample concatenated (primary, wrist).

Prompt (F1.13, F2.2): ``"In: What action should the robot take to {instruction.lower()}?\\nOut:"`` with BOS,
"▁" appended if it is not the last token, then K*A placeholder ids and STOP; batches are right-padded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vega3d.io import write_json
from vega3d.policies.modeling import PLACEHOLDER_ID, STOP_ID

PROMPT = "In: What action should the robot take to {}?\nOut:"
#: OpenVLA's processor values, bf16-rounded DINO statistics included (F1.9): copied for bit parity.
DINO_NORMALIZE = {"mean": [0.484375, 0.455078125, 0.40625], "std": [0.228515625, 0.2236328125, 0.224609375]}
SIGLIP_NORMALIZE = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
SPACE_TOKEN = "▁"


class PrismaticImageProcessor:
    """Images -> ``[3 * len(normalize), S, S]`` float tensors, one normalisation per featurizer."""

    def __init__(self, size: int = 224, normalize: list[dict] | None = None):
        self.size = int(size)
        self.normalize = normalize or [DINO_NORMALIZE, SIGLIP_NORMALIZE]
        self._mean = torch.tensor([n["mean"] for n in self.normalize], dtype=torch.float32)[..., None, None]
        self._std = torch.tensor([n["std"] for n in self.normalize], dtype=torch.float32)[..., None, None]

    def __call__(self, image) -> torch.Tensor:
        image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
        image = image.convert("RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return ((pixels[None] - self._mean) / self._std).flatten(0, 1)

    def to_dict(self) -> dict:
        crop = [{"output_size": [self.size, self.size]} for _ in self.normalize]
        resize = [{"antialias": True, "interpolation": 3, "max_size": None, "size": [self.size, self.size]} for _ in self.normalize]
        return {
            "image_processor_type": "PrismaticImageProcessor", "processor_class": "PrismaticProcessor",
            "image_resize_strategy": "resize-naive", "use_fused_vision_backbone": len(self.normalize) > 1,
            "input_sizes": [[3, self.size, self.size] for _ in self.normalize],
            "interpolations": ["bicubic" for _ in self.normalize],
            "means": [n["mean"] for n in self.normalize], "stds": [n["std"] for n in self.normalize],
            "tvf_resize_params": resize, "tvf_crop_params": crop, "tvf_do_letterbox": False, "tvf_letterbox_fill": None,
            "tvf_normalize_params": [{"inplace": False, **n} for n in self.normalize],
        }

    def save_pretrained(self, folder: str | Path) -> None:
        write_json(Path(folder) / "preprocessor_config.json", self.to_dict())

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "PrismaticImageProcessor":
        path = Path(folder) / "preprocessor_config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (the OpenVLA image processor settings)")
        values = json.loads(path.read_text())
        for key in ("tvf_normalize_params", "tvf_resize_params"):
            if key not in values:
                raise ValueError(f"{path}: no {key!r}; not an OpenVLA (Prismatic) preprocessor_config.json")
        size = values["tvf_resize_params"][0]["size"]
        return cls(size[0] if isinstance(size, list) else size,
                   [{"mean": n["mean"], "std": n["std"]} for n in values["tvf_normalize_params"]])


class PolicyInputs:
    """Tokenizer + image processor: ``inputs(instructions, images)`` -> the model's keyword arguments."""

    def __init__(self, tokenizer, image_processor: PrismaticImageProcessor, num_action_tokens: int):
        self.tokenizer, self.image_processor, self.num_action_tokens = tokenizer, image_processor, num_action_tokens

    def prompt_ids(self, instruction: str) -> list[int]:
        ids = list(self.tokenizer(PROMPT.format(instruction.lower())).input_ids)
        bos = self.tokenizer.bos_token_id
        if not ids or ids[0] != bos:
            ids = [bos] + ids
        space = self.tokenizer.convert_tokens_to_ids(SPACE_TOKEN)
        if ids[-1] != space:
            ids.append(space)
        return ids + [PLACEHOLDER_ID] * self.num_action_tokens + [STOP_ID]

    def __call__(self, instructions: list[str], images: list[list]) -> dict[str, torch.Tensor]:
        """``images[b]`` = the camera images of sample b (primary first), uint8 ``[H, W, 3]`` arrays or PIL."""
        ids = [self.prompt_ids(text) for text in instructions]
        length = max(len(i) for i in ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(ids), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), length), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention_mask[row, : len(seq)] = 1
        pixel_values = torch.stack([torch.cat([self.image_processor(image) for image in sample]) for sample in images])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
