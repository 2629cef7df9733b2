"""VSI-Bench: Mean Relative Accuracy for numeric answers, exact option letter for multiple choice.

Also the released evaluation's prompts and answer extraction (REFERENCE-SR section 6), used by
``vega3d predict vsibench``: :func:`vsibench_prompt` and :func:`released_answer`.
"""

from __future__ import annotations

import math

import numpy as np

from vega3d.evaluation.inputs import (
    EvaluationInputError,
    check_known,
    index_records,
    read_annotations,
    read_predictions,
)
from vega3d.evaluation.tally import percent

NUMERIC_TASKS = ("object_counting", "object_abs_distance", "object_size_estimation", "room_size_estimation")
CHOICE_TASKS = ("object_rel_distance", "object_rel_direction", "route_planning", "obj_appearance_order")
TASKS = NUMERIC_TASKS + CHOICE_TASKS  # the order of the paper's Tab. 2
DIRECTION_LEVELS = ("object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard")
# The question_type values of the rows: relative direction comes in three difficulty levels.
QUESTION_TYPES = (*NUMERIC_TASKS, "object_rel_distance", *DIRECTION_LEVELS, "route_planning", "obj_appearance_order")
MRA_THRESHOLDS = np.linspace(0.50, 0.95, 10)
PRE_PROMPT = "These are frames of a video."  # what an empty pre_prompt becomes
NA_POST_PROMPT = "Please answer the question using a single word or phrase."
MC_POST_PROMPT = "Answer with the option's letter from the given choices directly."


def vsibench_prompt(question: str, question_type: str, options=None, pre_prompt: str = "") -> str:
    """The released evaluation's text: numeric questions ``pre \n question \n NA-post``; multiple choice
    ``pre``, question, ``Options:`` with one option per line, MC-post, joined by newlines."""
    pre = pre_prompt or PRE_PROMPT
    if question_type in NUMERIC_TASKS:
        return f"{pre}\n{question}\n{NA_POST_PROMPT}"
    if question_type not in QUESTION_TYPES:
        raise ValueError(f"unknown VSI-Bench question_type {question_type!r}")
    if options is None or len(options) == 0:
        raise ValueError(f"multiple-choice question ({question_type}) without options")
    return "\n".join([pre, question, "Options:\n" + "\n".join(str(o) for o in options), MC_POST_PROMPT])


def released_answer(text: str) -> str:
    """The released extraction: the text before the first space, trailing "." removed, then stripped."""
    return str(text).split(" ")[0].rstrip(".").strip()


def mean_relative_accuracy(pred: float, gt: float) -> float:
    """Share of thresholds theta in 0.50, 0.55, ..., 0.95 with ``|pred - gt| / |gt| <= 1 - theta``.

    A non-finite ``pred`` scores 0; ``gt`` must be a non-zero finite number.
    """
    gt = float(gt)
    if gt == 0 or not math.isfinite(gt):
        raise ValueError(f"MRA needs a non-zero finite ground truth; got {gt}")
    relative_error = abs(float(pred) - gt) / abs(gt)
    if not math.isfinite(relative_error):
        return 0.0
    return float(np.mean(relative_error <= 1 - MRA_THRESHOLDS))


def first_token(answer) -> str:
    """The answer's first whitespace-separated token with trailing "." removed ("B. chair" -> "B")."""
    tokens = str(answer).split()
    return tokens[0].rstrip(".") if tokens else ""


def parse_number(answer) -> float | None:
    """The number a numeric answer starts with, or None when it is unparsable (scored 0)."""
    try:
        return float(first_token(answer))
    except ValueError:
        return None


def score_vsibench(predictions, annotations) -> dict:
    """Per-task scores, ``object_rel_direction`` = mean of its three levels, ``overall`` = mean of tasks.

    Rows need ``id``, ``question_type`` and ``ground_truth`` (numbers for the numeric tasks, the option
    letter for multiple choice). Everything is x100. A question without prediction scores 0. Tasks
    absent from the annotations are reported as None and left out of ``overall``.
    """
    rows = index_records(
        read_annotations(annotations), ("id",), "VSI-Bench annotations", required=("question_type", "ground_truth")
    )
    predicted = read_predictions(predictions, required=("answer",))
    check_known(predicted, rows)
    by_type: dict[str, list[float]] = {}
    for sample_id, row in rows.items():
        kind = row["question_type"]
        if kind not in QUESTION_TYPES:
            raise EvaluationInputError(f"VSI-Bench row {sample_id!r}: unknown question_type {kind!r}")
        answer = predicted[sample_id].fields["answer"] if sample_id in predicted else ""
        if kind in NUMERIC_TASKS:
            gt = parse_number(row["ground_truth"])
            if gt is None or gt == 0 or not math.isfinite(gt):
                raise EvaluationInputError(f"VSI-Bench row {sample_id!r}: ground_truth must be a non-zero number")
            value = parse_number(answer)
            score = 0.0 if value is None else mean_relative_accuracy(value, gt)
        else:
            score = float(first_token(answer).lower() == str(row["ground_truth"]).strip().lower())
        by_type.setdefault(kind, []).append(score)
    levels = {kind: percent(by_type.get(kind, [])) for kind in DIRECTION_LEVELS}
    present_levels = [value for value in levels.values() if value is not None]
    tasks = {task: percent(by_type.get(task, [])) for task in TASKS}
    tasks["object_rel_direction"] = sum(present_levels) / len(present_levels) if present_levels else None
    present = [value for value in tasks.values() if value is not None]
    metrics = {"overall": sum(present) / len(present), **tasks, **levels}
    metrics.update(num_samples=len(rows), num_missing=len(rows) - len(predicted))
    return metrics
