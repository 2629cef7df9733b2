"""The 3D model, its tokenizer and the scene inputs of a ``vega3d predict`` run (the five 3D tasks)."""

from __future__ import annotations

import os

import torch

from vega3d.models.llava_prompts import GROUND_TOKEN, inference_prompt


class SceneModel:
    """The 3D model, its tokenizer and the scene inputs, built once per prediction run."""

    def __init__(self, args):
        from transformers import AutoTokenizer

        from vega3d.models import Vega3DLlavaVideoForConditionalGeneration
        from vega3d.models.generative import GenerativeSource
        from vega3d.training.scene_tasks import SceneVideos

        device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")
        self.device, self.args = torch.device(device), args
        self.model = Vega3DLlavaVideoForConditionalGeneration.from_pretrained(args.model).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(args.model)
        generative = None
        if self.model.generative is not None:
            generative = GenerativeSource(self.model.generative, args.generative_source, args.store, device=self.device)
        size = self.model.config.vision_config.image_size
        self.videos = SceneVideos(args.scenes, args.num_frames, (size, size), args.info, generative)
        self.boxes = None
        if getattr(args, "boxes", None) is not None:
            from vega3d.prepare.tasks import BoxFile

            self.boxes = BoxFile(args.boxes)

    def inputs(self, sample: dict, answer: str = "") -> dict:
        record = sample["record"]
        ids = inference_prompt(self.tokenizer, record.record["conversations"][0]["value"], self.args.prompt_style, answer)
        video = self.videos(record.scene, record.where, record.generative_scene)
        ids = torch.tensor([ids], device=self.device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                **{key: [value.to(self.device)] for key, value in video.items()}}

    def proposals(self, sample: dict) -> list[list[float]]:
        record = sample["record"]
        if not self.boxes.has_scene(record.scene):
            return []
        return [box for box in self.boxes.scene(record.scene, record.where) if box is not None]

    @torch.no_grad()
    def scores(self, sample: dict, proposals: list) -> torch.Tensor:
        boxes = torch.tensor(proposals, dtype=torch.float32, device=self.device)
        return self.model(**self.inputs(sample, GROUND_TOKEN), boxes=[boxes]).grounding_scores[0].float().cpu()

    def generate(self, sample: dict, coord_box=None) -> str:
        inputs = self.inputs(sample)
        if coord_box is not None:
            inputs["coord_boxes"] = [torch.tensor(coord_box, dtype=torch.float32, device=self.device)]
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        new = self.model.generate(**inputs, max_new_tokens=self.args.max_new_tokens, do_sample=False, num_beams=1,
                                  eos_token_id=end, pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.decode(new[0], skip_special_tokens=True).strip().removesuffix("<|im_end|>")
