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

from pathlib import Path

from vega3d.evaluation.predict import register_task

EMPTY_BOX = [0.0] * 6  # zero volume: IoU 0 with every box
MAX_NEW_TOKENS = 512
# vega3d.models.llava_prompts.PROMPT_STYLES, spelt out so that building the CLI imports no model code (a test
# keeps the two equal); the model itself is imported when a prediction runs (vega3d.evaluation.scene_model).
PROMPT_STYLES = ("paper", "reference")


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


def _grounding_arguments(parser) -> None:
    _arguments(parser, proposals=True)


def _register_grounding(task: str, description: str, fields) -> None:
    """A grounding task: the scene's proposals, the model's scores, ``fields(proposals, scores)`` (None
    scores: the scene has no proposal)."""
    def build(args):
        from vega3d.evaluation.scene_model import SceneModel

        model = SceneModel(args)

        def predict(sample: dict) -> dict:
            proposals = model.proposals(sample)
            return fields(proposals, model.scores(sample, proposals) if proposals else None)
        return predict

    register_task(task, description, processed_reader(task), _grounding_arguments)(build)


def _scanrefer_fields(proposals, scores) -> dict:
    from vega3d.models.grounding import select_scanrefer

    return {"box": EMPTY_BOX if scores is None else proposals[select_scanrefer(scores)]}


def _multi3drefer_fields(proposals, scores) -> dict:
    from vega3d.models.grounding import select_multi3drefer

    return {"boxes": [] if scores is None else [proposals[i] for i in select_multi3drefer(scores)]}


_register_grounding("scanrefer", "ScanRefer boxes with the 3D model (argmax; zero-target -> best real proposal)",
                    _scanrefer_fields)
_register_grounding("multi3drefer", "Multi3DRefer boxes with the 3D model (zero-target = none; cumulative 0.4)",
                    _multi3drefer_fields)


@register_task("scan2cap", "Scan2Cap captions with the 3D model (greedy; a null box_input -> \"\")",
               processed_reader("scan2cap"), _arguments)
def scan2cap(args):
    from vega3d.evaluation.scene_model import SceneModel

    model = SceneModel(args)

    def predict(sample: dict) -> dict:
        record = sample["record"].record
        box = record.get("box_input")
        caption = "" if box is None else model.generate(sample, coord_box=box)
        return {"scene_id": record["metadata"]["scene_id"], "box": EMPTY_BOX if box is None else box, "caption": caption}

    return predict


def _answers(args):
    from vega3d.evaluation.scene_model import SceneModel

    model = SceneModel(args)
    return lambda sample: {"answer": model.generate(sample)}


register_task("scanqa", "ScanQA answers with the 3D model (greedy)", processed_reader("scanqa"), _arguments)(_answers)
register_task("sqa3d", "SQA3D answers with the 3D model (greedy)", processed_reader("sqa3d"), _arguments)(_answers)
