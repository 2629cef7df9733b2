"""SQA3D answer cleaning and EM, VSI-Bench MRA / multiple choice / averaging, on hand-made samples."""

from __future__ import annotations

import pyarrow
import pyarrow.parquet
import pytest

from vega3d.evaluation import EvaluationInputError, clean_sqa3d_answer, mean_relative_accuracy, score


@pytest.mark.parametrize("raw, cleaned", [
    ("  The   Chair. ", "chair"),  # lower, trim, collapse, punctuation deleted, article dropped
    ("Left!?", "left"),
    ("letf", "left"), ("let", "left"), ("rigth side", "right side"), ("rght", "right"), ("behine", "behind"),
    ("tehre", "there"), ("chai", "chair"), ("wasing machine", "washing machine"), ("waslked", "walked"),
    ("tv", "TV"), ("a tv", "TV"),  # typo fix first, then the article before the (now upper-case) word
    ("3 oclock", "three o'clock"), ("o' clock", "o'clock"),
    ("0", "zero"), ("None", "zero"), ("2", "two"), ("20", "twenty"), ("23", "twenty-three"), ("21", "21"),
    ("2-3", "two-three"),
    ("It's 10:30!", "it's ten:30"),  # ':' and "'" survive; 10 is a whole word, 30 has no word
    ("1.5", "fifteen"),  # "." is deleted before numbers are read: the reference behaves this way
    ("mat2", "mat"), ("a mat2", "mat"), ("the 2", "two"),  # numbers -> digit drop -> articles
    ("an apple", "apple"), ("a", "a"), ("the a chair", "chair"),  # a, an, the are dropped in that order
    ("Backwards", "backward"), ("letter", "letter"),  # whole words only
    ("café", "caf"),  # characters outside [a-z0-9,'\s-:] are deleted
])
def test_clean_sqa3d_answer(raw, cleaned):
    assert clean_sqa3d_answer(raw) == cleaned


def sqa3d_files(write_json):
    questions = [("What is on the table?", "cup"), ("Is the door open?", "yes"), ("How many chairs?", "two"),
                 ("Which way should I go?", "left"), ("Can I sit on it?", "yes"), ("Where is the sofa?", "behind me")]
    question_file = write_json("v1_balanced_questions_test_scannetv2.json", {"questions": [
        {"question": q, "question_id": 100 + i, "scene_id": "s", "situation": "I stand."}
        for i, (q, _) in enumerate(questions)
    ]})
    answer_file = write_json("v1_balanced_sqa_annotations_test_scannetv2.json", {"annotations": [
        {"question_id": 100 + i, "scene_id": "s", "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": 1}]}
        for i, (_, a) in enumerate(questions)
    ]})
    return question_file, answer_file


def test_sqa3d_golden(write_json, write_jsonl):
    predictions = write_jsonl("sqa.jsonl", [
        {"id": 100, "answer": "A cup."},  # -> "cup": right (What)
        {"id": 101, "answer": "no"},  # wrong (Is)
        {"id": 102, "answer": "2"},  # -> "two": right (How)
        {"id": 103, "answer": "letf"},  # -> "left": right (Which)
        {"id": 105, "answer": "Behine me"},  # -> "behind me": right (Others)
    ])  # 104 (Can) has no prediction: wrong
    metrics = score("sqa3d", predictions, list(sqa3d_files(write_json)))
    assert metrics["EM"] == pytest.approx(100 * 4 / 6)
    expected = {"What": 100.0, "Is": 0.0, "How": 100.0, "Can": 0.0, "Which": 100.0, "Others": 100.0}
    assert {kind: metrics[f"{kind}/EM"] for kind in expected} == expected
    assert (metrics["num_samples"], metrics["num_missing"]) == (6, 1)


def test_sqa3d_needs_both_files(write_json):
    question_file, _ = sqa3d_files(write_json)
    with pytest.raises(EvaluationInputError, match="needs both the questions file and the annotations"):
        score("sqa3d", [], [question_file])


def test_mean_relative_accuracy_hand_values():
    assert mean_relative_accuracy(3, 3) == 1.0
    assert mean_relative_accuracy(0.93, 1) == pytest.approx(0.9)  # 0.07 <= 1 - theta for theta <= 0.90
    assert mean_relative_accuracy(1.27, 1) == pytest.approx(0.5)  # theta in 0.50 .. 0.70
    assert mean_relative_accuracy(0.5, 1) == pytest.approx(0.1)  # 0.5 <= 1 - 0.50: inclusive
    assert mean_relative_accuracy(3, 1) == 0.0
    assert mean_relative_accuracy(-1.27, -1) == pytest.approx(0.5)  # relative to |gt|
    assert mean_relative_accuracy(float("nan"), 1) == 0.0
    with pytest.raises(ValueError, match="non-zero"):
        mean_relative_accuracy(1, 0)


VSI_ROWS = [
    # (id, question_type, ground_truth, prediction or None, score)
    (1, "object_counting", "3", "3", 1.0),
    (2, "object_counting", "4", "five", 0.0),  # unparsable number
    (3, "object_abs_distance", "2.0", "2.54 meters", 0.5),  # relative error 0.27
    (4, "object_size_estimation", "100", "93.", 0.9),  # trailing "." stripped; relative error 0.07
    (5, "room_size_estimation", "20", None, 0.0),  # no prediction
    (6, "object_rel_distance", "B", "b. the chair", 1.0),  # first token, case-insensitive
    (7, "object_rel_direction_easy", "A", "A", 1.0),
    (8, "object_rel_direction_medium", "C", "D", 0.0),
    (9, "object_rel_direction_medium", "A", "A.", 1.0),
    (10, "object_rel_direction_hard", "B", "The answer is B", 0.0),  # only the first token counts
    (11, "object_rel_direction_hard", "C", "", 0.0),
    (12, "route_planning", "A", "A", 1.0),
    (13, "obj_appearance_order", "D", "C", 0.0),
]


def vsi_rows():
    return [{"id": i, "dataset": "scannet", "scene_name": "s", "question_type": kind, "question": "?",
             "ground_truth": gt, "options": None if gt[0].isdigit() else ["A. x", "B. y", "C. z", "D. w"]}
            for i, kind, gt, _, _ in VSI_ROWS]


def test_vsibench_golden(tmp_path, write_jsonl):
    parquet = tmp_path / "test-00000-of-00001.parquet"
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(vsi_rows()), parquet)
    predictions = write_jsonl("vsi.jsonl", [{"id": i, "answer": p} for i, _, _, p, _ in VSI_ROWS if p is not None])
    metrics = score("vsibench", predictions, parquet)
    expected = {
        "object_counting": 50.0, "object_abs_distance": 50.0, "object_size_estimation": 90.0,
        "room_size_estimation": 0.0, "object_rel_distance": 100.0, "route_planning": 100.0,
        "obj_appearance_order": 0.0,
        "object_rel_direction_easy": 100.0, "object_rel_direction_medium": 50.0, "object_rel_direction_hard": 0.0,
        # the mean of the three levels (50), not the pooled 2 of 5 samples (40)
        "object_rel_direction": 50.0,
    }
    assert {key: metrics[key] for key in expected} == pytest.approx(expected)
    assert metrics["overall"] == pytest.approx((50 + 50 + 90 + 0 + 100 + 50 + 100 + 0) / 8)
    assert (metrics["num_samples"], metrics["num_missing"]) == (13, 1)


def test_vsibench_subset_leaves_absent_tasks_out(write_jsonl):
    rows = [r for r in vsi_rows() if r["question_type"] in ("object_counting", "object_rel_direction_hard")]
    metrics = score("vsibench", [{"id": 1, "answer": "3"}], rows)
    assert metrics["route_planning"] is None and metrics["object_rel_direction_easy"] is None
    assert metrics["object_rel_direction"] == 0.0  # only the hard level is present
    assert metrics["overall"] == pytest.approx((50 + 0) / 2)


@pytest.mark.parametrize("row, message", [
    ({"id": 1, "question_type": "object_countin", "ground_truth": "3"}, "unknown question_type 'object_countin'"),
    ({"id": 1, "question_type": "object_rel_direction", "ground_truth": "A"}, "unknown question_type"),  # levels only
    ({"id": 1, "question_type": "object_counting", "ground_truth": "0"}, "ground_truth must be a non-zero number"),
    ({"id": 1, "question_type": "object_counting"}, "record #1: missing field\\(s\\) 'ground_truth'"),
])
def test_vsibench_bad_rows(row, message):
    with pytest.raises(EvaluationInputError, match=message):
        score("vsibench", [], [row])
