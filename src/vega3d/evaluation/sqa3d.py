"""SQA3D situated question answering: exact match after the standard answer cleaning."""

from __future__ import annotations

import re

from vega3d.evaluation.inputs import (
    EvaluationInputError,
    check_known,
    index_records,
    read_annotations,
    read_predictions,
    source_name,
)
from vega3d.evaluation.tally import grouped_percent, percent

QUESTION_TYPES = ("What", "Is", "How", "Can", "Which", "Others")

_TYPOS = {
    "letf": "left", "let": "left", "tehre": "there", "rigth": "right", "rght": "right", "behine": "behind",
    "tv": "TV", "chai": "chair", "wasing": "washing", "waslked": "walked", "oclock": "o'clock",
}
_NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                 "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
_NUMBERS = {**{str(n): word for n, word in enumerate(_NUMBER_WORDS)}, "none": "zero", "23": "twenty-three"}


def _replace_whole_words(text: str, table: dict) -> str:
    pattern = r"\b(" + "|".join(map(re.escape, table)) + r")\b"
    return re.sub(pattern, lambda match: table[match.group(1)], text)


def clean_sqa3d_answer(text: str) -> str:
    """Normalise an answer the way SQA3D's EM is scored (the order matters; see docs/evaluation.md)."""
    text = text.lower().strip(" ")
    # Runs of spaces collapse to one; this also covers the ". " after runs of spaces step.
    text = re.sub(r" {2,}", " ", text)
    text = re.sub(r"[^a-z0-9,'\s\-:]", "", text)
    text = _replace_whole_words(text, _TYPOS)
    text = re.sub(r"\bo' +clock\b", "o'clock", text)
    text = _replace_whole_words(text, _NUMBERS)
    text = re.sub(r"\b([a-zA-Z]+)[0-9]\b", r"\1", text)  # mat2 -> mat
    for article in ("a", "an", "the"):
        text = re.sub(rf"\b{article}\b ([a-zA-Z]+)", r"\1", text)
    return re.sub(r"\bbackwards\b", "backward", text)


def question_type(question: str) -> str:
    """SQA3D's breakdown: the question's first word (What/Is/How/Can/Which), anything else Others."""
    words = question.split()
    first = words[0].capitalize() if words else ""
    return first if first in QUESTION_TYPES[:-1] else "Others"


def _sqa3d_lists(annotations) -> tuple[list, list]:
    """The ``questions`` and ``annotations`` lists, from two published files or one merged object."""
    sources = annotations if isinstance(annotations, (list, tuple)) else [annotations]
    questions, answers = [], []
    for source in sources:
        data = read_annotations(source)
        if not isinstance(data, dict) or not ({"questions", "annotations"} & set(data)):
            raise EvaluationInputError(
                f"{source_name(source, 'SQA3D annotations')}: expected the published "
                "questions file ({'questions': [...]}) and/or annotations file ({'annotations': [...]})"
            )
        questions += data.get("questions", [])
        answers += data.get("annotations", [])
    if not questions or not answers:
        raise EvaluationInputError("SQA3D needs both the questions file and the annotations (answers) file")
    return questions, answers


def score_sqa3d(predictions, annotations) -> dict:
    """EM (x100) of cleaned prediction == cleaned reference answer, overall and per question type.

    ``annotations`` is the published pair (questions JSON, annotations JSON) as paths or loaded
    objects, or one object holding both lists. A question without prediction counts as wrong.
    """
    question_list, answer_list = _sqa3d_lists(annotations)
    questions = index_records(question_list, ("question_id",), "SQA3D questions", required=("question",))
    answers = index_records(answer_list, ("question_id",), "SQA3D annotations", required=("answers",))
    if set(questions) != set(answers):
        orphan = sorted(set(questions) ^ set(answers))[0]
        raise EvaluationInputError(f"SQA3D question {orphan!r} is in only one of the questions/annotations files")
    predicted = read_predictions(predictions, required=("answer",))
    check_known(predicted, answers)
    correct, groups = {}, {}
    for sample_id, record in answers.items():
        references = {clean_sqa3d_answer(str(answer["answer"])) for answer in record["answers"]}
        prediction = predicted.get(sample_id)
        correct[sample_id] = prediction is not None and clean_sqa3d_answer(str(prediction.fields["answer"])) in references
        groups[sample_id] = question_type(questions[sample_id]["question"])
    metrics = {"EM": percent(correct.values())}
    metrics.update(grouped_percent(correct, groups, QUESTION_TYPES, "EM"))
    metrics.update(num_samples=len(answers), num_missing=len(answers) - len(predicted))
    return metrics
