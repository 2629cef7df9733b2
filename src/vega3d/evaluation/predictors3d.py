"""The five 3D tasks of ``vega3d predict`` (ScanRefer, Multi3DRefer, Scan2Cap, ScanQA, SQA3D) with the
LLaVA-Video 3D model, over the processed val/test records of ``vega3d prepare``.

One line per record, ``id`` = :func:`vega3d.prepare.evaluation_id`, with the fields ``vega3d eval`` reads:

* ``scanrefer``: ``box``, the proposal chosen by ``select_scanrefer`` (argmax; the best real proposal when
  the zero-target wins, fact 25);
* ``multi3drefer``: ``boxes``, those of ``select_multi3drefer`` (none when the zero-target wins; else by
  probability until 0.4 is reached, facts 26, 55);
* ``scan2cap``: ``scene_id``, ``box`` (the record's ``box_input``) and ``caption``; a null ``box_input``
  (no proposal with IoU >= 0.5) gives ``""`` without running the model (fact 30) and a zero-volume box,
  which can match no object;
* ``scanqa`` / ``sqa3d``: ``answer``.

Proposals (``--boxes``) are the split's ``scannet_val_pred_box.json`` (fact 22); a scene without any
gives a zero-volume ScanRefer box and no Multi3DRefer box. Text is decoded greedily (``do_sample=False``,
one beam, ``--max-new-tokens`` 512, fact 30), special tokens skipped, stripped.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vega3d.evaluation.predict import register_task
from vega3d.models.grounding import select_multi3drefer, select_scanrefer
from vega3d.models.llava_prompts import GROUND_TOKEN, PROMPT_STYLES, inference_prompt

EMPTY_BOX = [0.0] * 6  # zero volume: IoU 0 with every box
MAX_NEW_TOKENS = 512


def processed_reader(task: str):
    """Reads processed records (``{task}_{split}_llava_style.json``) as samples keyed by their evaluation id;
    a record of another task is an error naming its line."""
    def read(path) -> list[dict]:
        from vega3d.prepare import evaluation_id
        from vega3d.training.scene_tasks import read_task_records

        records = read_task_records(path)
        wrong = next((r for r in records if r.task != task), None)
        if wrong is not None:
            raise ValueError(f"{wrong.where}: a {wrong.task} record; `vega3d predict {task}` reads {task} records")
        return [{"id": evaluation_id(r.record), "record": r} for r in records]
    return read


def _arguments(parser, proposals: bool = False) -> None:
    parser.add_argument("--scenes", required=True, type=Path,
                        help="folder of scene folders (a record's video scannet/X is SCENES/X)")
    parser.add_argument("--info", type=Path, help="EmbodiedScan info JSON of `vega3d prepare scenes` (frame lists, axis alignment)")
    if proposals:
        parser.add_argument("--boxes", required=True, type=Path, help="proposals: scannet_{split}_pred_box.json")
    parser.add_argument("--num-frames", type=int, default=32, help="frames per scene (released: 32)")
    parser.add_argument("--prompt-style", choices=PROMPT_STYLES, default="paper",
                        help="paper: the training text (default); reference: the released evaluation prompt (fact 48)")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)


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


def _grounding_arguments(parser) -> None:
    _arguments(parser, proposals=True)


def _register_grounding(task: str, description: str, fields) -> None:
    """A grounding task: the scene's proposals, the model's scores, ``fields(proposals, scores)`` (None
    scores: the scene has no proposal)."""
    def build(args):
        model = SceneModel(args)

        def predict(sample: dict) -> dict:
            proposals = model.proposals(sample)
            return fields(proposals, model.scores(sample, proposals) if proposals else None)
        return predict

    register_task(task, description, processed_reader(task), _grounding_arguments)(build)


_register_grounding("scanrefer", "ScanRefer boxes with the 3D model (argmax; zero-target -> best real proposal)",
                    lambda proposals, scores: {"box": EMPTY_BOX if scores is None else proposals[select_scanrefer(scores)]})
_register_grounding("multi3drefer", "Multi3DRefer boxes with the 3D model (zero-target = none; cumulative 0.4)",
                    lambda proposals, scores: {"boxes": [] if scores is None else
                                               [proposals[i] for i in select_multi3drefer(scores)]})


@register_task("scan2cap", "Scan2Cap captions with the 3D model (greedy; a null box_input -> \"\")",
               processed_reader("scan2cap"), _arguments)
def scan2cap(args):
    model = SceneModel(args)

    def predict(sample: dict) -> dict:
        record = sample["record"].record
        box = record.get("box_input")
        caption = "" if box is None else model.generate(sample, coord_box=box)
        return {"scene_id": record["metadata"]["scene_id"], "box": EMPTY_BOX if box is None else box, "caption": caption}

    return predict


def _answers(args):
    model = SceneModel(args)
    return lambda sample: {"answer": model.generate(sample)}


register_task("scanqa", "ScanQA answers with the 3D model (greedy)", processed_reader("scanqa"), _arguments)(_answers)
register_task("sqa3d", "SQA3D answers with the 3D model (greedy)", processed_reader("sqa3d"), _arguments)(_answers)
