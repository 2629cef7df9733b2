"""Scan2Cap and ScanQA against hand-computed CIDEr-D, BLEU, ROUGE-L, EM (and METEOR where Java is)."""

from __future__ import annotations

import math

import pytest

from vega3d.evaluation import EvaluationInputError, score
from vega3d.evaluation.captions import java_available, language_metrics, normalize_caption

CUBE = [0, 0, 0, 2, 2, 2]
HALF = [0, 0, 0, 2, 2, 1]  # IoU exactly 0.5 with CUBE
QUARTER = [0, 0, 0, 2, 1, 1]  # IoU exactly 0.25 with CUBE
BETA2 = 1.2**2  # ROUGE-L's recall weight


def rouge_l(precision, recall):
    return (1 + BETA2) * precision * recall / (recall + BETA2 * precision)


def test_normalize_caption():
    assert normalize_caption("A red chair, by the wall.") == "sos a red chair , by the wall . eos"
    assert normalize_caption("  Two\tspaces ") == "sos two spaces eos"
    assert normalize_caption("") == "sos eos"


def scan2cap_annotations():
    record = lambda obj, ann, text: {  # noqa: E731
        "scene_id": "scene0", "object_id": obj, "object_name": "x", "ann_id": ann, "description": text
    }
    return {
        "annotations": [record("1", "0", "a red chair."), record("2", "0", "the big table")],
        "boxes": {"scene0": {"1": {"box": CUBE}, "2": {"box": [0, 10, 0, 2, 2, 2]}}},
    }


def test_scan2cap_golden(write_jsonl):
    predictions = write_jsonl("proposals.jsonl", [
        {"id": "p1", "scene_id": "scene0", "box": HALF, "caption": "A red chair."},  # IoU 0.5: paired
        {"id": "p2", "scene_id": "scene0", "box": QUARTER, "caption": "the big table"},  # lower IoU: ignored
        {"id": "p3", "scene_id": "scene0", "box": [0, 10, 0, 2, 1, 1], "caption": "the big table"},  # 0.25: none
    ])
    metrics = score("scan2cap", predictions, scan2cap_annotations(), with_meteor=False)
    # Object 1: "sos a red chair . eos" == its reference. Object 2: no proposal at IoU >= 0.5, so the
    # empty caption "sos eos" is scored against "sos the big table eos".
    # CIDEr-D: sos/eos occur in both references (idf 0); every other n-gram has the same idf, so
    # object 1 scores 10 (cosine 1 for n = 1..4, no length penalty) and object 2 scores 0.
    assert metrics["CIDEr@0.5"] == pytest.approx(100 * (10 + 0) / 2)
    # Corpus BLEU-4: n-gram matches 8/8, 5/6, 4/4, 3/3; test length 6+2, closest ref lengths 6+5.
    assert metrics["BLEU-4@0.5"] == pytest.approx(100 * math.exp(1 - 11 / 8) * (5 / 6) ** 0.25, rel=1e-6)
    # ROUGE-L per object: 1, and LCS "sos eos" = 2 of 2 hypothesis / 5 reference tokens.
    assert metrics["ROUGE-L@0.5"] == pytest.approx(100 * (1 + rouge_l(1, 2 / 5)) / 2)
    assert "METEOR@0.5" not in metrics
    assert (metrics["num_objects"], metrics["num_unmatched"], metrics["num_proposals"]) == (2, 1, 3)


def test_scan2cap_pools_all_descriptions_of_an_object():
    annotations = scan2cap_annotations()
    annotations["annotations"].append(
        {"scene_id": "scene0", "object_id": "1", "ann_id": "1", "description": "The chair, near the wall"}
    )
    proposals = [{"id": "p", "scene_id": "scene0", "box": CUBE, "caption": "A chair."}]
    expected = language_metrics(
        {"scene0|1": ["sos a red chair . eos", "sos the chair , near the wall eos"],
         "scene0|2": ["sos the big table eos"]},
        {"scene0|1": "sos a chair . eos", "scene0|2": "sos eos"},
        with_meteor=False,
    )
    metrics = score("Scan2Cap", proposals, annotations, with_meteor=False)
    assert metrics["CIDEr@0.5"] == pytest.approx(expected["CIDEr"])
    assert metrics["BLEU-4@0.5"] == pytest.approx(expected["BLEU-4"])
    assert metrics["num_objects"] == 2


def test_meteor_without_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(EvaluationInputError, match="METEOR needs Java"):
        score("scanqa", [], SCANQA, with_meteor=True)
    assert "METEOR" not in score("scanqa", [], SCANQA)  # auto: skipped without Java


def test_scan2cap_without_proposals_scores_every_object_empty():
    metrics = score("scan2cap", [], scan2cap_annotations(), with_meteor=False)
    assert metrics["CIDEr@0.5"] == 0.0
    assert metrics["num_unmatched"] == 2


def test_scan2cap_proposal_in_unknown_scene(write_jsonl):
    predictions = write_jsonl("p.jsonl", [{"id": "p9", "scene_id": "scene7", "box": CUBE, "caption": "x"}])
    with pytest.raises(EvaluationInputError, match=r"p\.jsonl line 1: id 'p9' is a proposal in scene 'scene7'"):
        score("scan2cap", predictions, scan2cap_annotations(), with_meteor=False)


SCANQA = [
    {"question_id": "q1", "scene_id": "s", "question": "?", "answers": ["brown", "dark brown"]},
    {"question_id": "q2", "scene_id": "s", "question": "?", "answers": ["two"]},
    {"question_id": "q3", "scene_id": "s", "question": "?", "answers": ["on the table"]},
    {"question_id": "q4", "scene_id": "s", "question": "?", "answers": ["white"]},
]


def test_scanqa_golden(write_jsonl, write_json):
    predictions = write_jsonl("answers.jsonl", [
        {"id": "q1", "answer": "brown."},  # metrics see "brown"; EM compares the raw "brown." -> miss
        {"id": "q2", "answer": "two"},
        {"id": "q3", "answer": "On the table"},  # EM is case-sensitive -> miss
    ])  # q4 has no prediction: an empty answer, scored
    metrics = score("scanqa", predictions, write_json("scanqa_val.json", SCANQA), with_meteor=False)
    assert metrics["EM"] == pytest.approx(25.0)
    # CIDEr-D with 4 samples: every reference n-gram has document frequency 1, so all weights are
    # equal and cancel in the cosine. q1: 1 vs "brown", 1/sqrt(2) vs "dark brown" times the length
    # penalty exp(-1/72) (pycocoevalcap's length counts bigrams), averaged over n = 1..4 and 2 refs.
    # q2: unigram cosine 1. q3: unigram 2/3 ("On" != "on"), bigram 1/2. q4: 0.
    per_sample = [
        10 * (1 + math.exp(-1 / 72) / math.sqrt(2)) / 4 / 2,
        10 * 1 / 4,
        10 * (2 / 3 + 1 / 2) / 4,
        0.0,
    ]
    assert metrics["CIDEr"] == pytest.approx(100 * sum(per_sample) / 4)
    # BLEU: test length 1+1+3+0 = 5, closest reference lengths 1+1+3+1 = 6; unigram matches 4/5,
    # bigram 1/2 ("the table"), no trigram match (BLEU-3/4 only keep pycocoevalcap's epsilon).
    brevity = math.exp(1 - 6 / 5)
    assert metrics["BLEU-1"] == pytest.approx(100 * brevity * 4 / 5, rel=1e-6)
    assert metrics["BLEU-2"] == pytest.approx(100 * brevity * (4 / 5 * 1 / 2) ** 0.5, rel=1e-6)
    assert metrics["BLEU-3"] == pytest.approx(0.0, abs=1e-2)
    assert metrics["BLEU-4"] == pytest.approx(0.0, abs=1e-2)
    # ROUGE-L per sample: 1, 1, P = R = 2/3, 0.
    assert metrics["ROUGE-L"] == pytest.approx(100 * (1 + 1 + rouge_l(2 / 3, 2 / 3) + 0) / 4)
    assert (metrics["num_samples"], metrics["num_missing"]) == (4, 1)


def test_scanqa_needs_reference_answers():
    with pytest.raises(EvaluationInputError, match="ScanQA annotation 'q1': needs a non-empty 'answers'"):
        score("scanqa", [], [{"question_id": "q1", "answers": []}], with_meteor=False)


@pytest.mark.skipif(not java_available(), reason="METEOR needs Java")
def test_meteor_runs_under_java():
    # METEOR 1.5 gives 1 to a hypothesis identical to its reference and 0 when nothing matches.
    annotations = [{"question_id": "q1", "answers": ["the brown wooden chair"]}]
    assert score("scanqa", [{"id": "q1", "answer": "the brown wooden chair"}], annotations)["METEOR"] == 100.0
    assert score("scanqa", [{"id": "q1", "answer": "green"}], annotations)["METEOR"] == 0.0
    metrics = score("scan2cap", [{"id": "p", "scene_id": "scene0", "box": CUBE, "caption": "A red chair."}],
                    scan2cap_annotations(), with_meteor=True)
    assert 0.0 < metrics["METEOR@0.5"] < 100.0
