"""The prediction tasks of ``vega3d predict`` (registered with :func:`vega3d.evaluation.predict.register_task`).

Each task is one small ``build(args)`` returning ``predict(sample) -> fields``; the driver does the rest
(resuming, sharding, merging). Adding a benchmark (ScanRefer, Multi3DRefer, Scan2Cap, ScanQA, SQA3D for
the 3D model) is one more function here: read its samples, build the model once, answer one sample.
"""

from __future__ import annotations

from pathlib import Path

from vega3d.evaluation.inputs import read_annotations
from vega3d.evaluation.predict import register_task
from vega3d.evaluation.vsibench import released_answer, vsibench_prompt

VSIBENCH_FRAMES = 32  # released: linspace over the video, all frames if it has fewer
VSIBENCH_MAX_NEW_TOKENS = 16


def read_vsibench(path) -> list[dict]:
    """VSI-Bench rows (the published ``test.parquet`` or JSONL): id, dataset, scene_name, question_type,
    question, options (multiple choice), ground_truth."""
    rows = read_annotations(Path(path))
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of VSI-Bench rows")
    for number, row in enumerate(rows, start=1):
        missing = [k for k in ("id", "dataset", "scene_name", "question_type", "question") if row.get(k) is None]
        if missing:
            raise ValueError(f"{path} row {number}: missing {', '.join(missing)}")
    return rows


def _vsibench_arguments(parser) -> None:
    parser.add_argument("--videos", type=Path, help="folder with DATASET/SCENE.mp4, or DATASET/SCENE/ frame folders "
                                                    "(default: the data file's folder)")
    parser.add_argument("--num-frames", type=int, default=VSIBENCH_FRAMES, help="frames per video (released: 32)")
    parser.add_argument("--max-new-tokens", type=int, default=VSIBENCH_MAX_NEW_TOKENS, help="released: 16")


@register_task("vsibench", "VSI-Bench answers the released way (32 frames, its prompts, greedy, first word)",
               read_vsibench, _vsibench_arguments)
def vsibench(args):
    from vega3d.serving import Assistant

    videos = args.videos or Path(args.data).parent
    assistant = Assistant(args.model, num_frames=args.num_frames, device=args.device, max_new_tokens=args.max_new_tokens,
                          generative_source=args.generative_source, store=args.store)

    def predict(row: dict) -> dict:
        video = videos / str(row["dataset"]) / f"{row['scene_name']}.mp4"
        if not video.is_file():
            video = video.with_suffix("")  # a folder of extracted frames
            if not video.is_dir():
                raise FileNotFoundError(f"VSI-Bench row {row['id']!r}: no video {video}.mp4 nor frame folder {video} "
                                        "(pass --videos DIR)")
        text = assistant.ask(video, vsibench_prompt(row["question"], row["question_type"], row.get("options")), strip=False)
        return {"answer": released_answer(text), "raw": text, "question_type": row["question_type"]}

    return predict
