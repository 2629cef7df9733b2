"""The released scripts' conventions, offered as ``convention="released"`` (defaults stay the field's)."""

from __future__ import annotations

import pytest

from vega3d.cli import main
from vega3d.evaluation import score
from vega3d.evaluation.captions import normalize_caption

from .test_eval_captions import HALF, QUARTER, SCANQA, rouge_l
from .test_eval_grounding import scanrefer_annotations, shifted


def test_scanrefer_released_epsilon_fails_exact_thresholds(write_jsonl):
    predictions = write_jsonl("preds.jsonl", [
        {"id": "scene0|1|0", "box": HALF},  # IoU exactly 0.5
        {"id": "scene0|2|0", "box": shifted(QUARTER, 10)},  # IoU exactly 0.25
        {"id": "scene1|5|1", "box": [0, 0, 0, 2, 2, 2]},  # IoU 1: 1 / (1 + 1e-8) still passes
    ])
    field = score("scanrefer", predictions, scanrefer_annotations())
    released = score("scanrefer", predictions, scanrefer_annotations(), convention="released")
    assert (field["Acc@0.25"], field["Acc@0.5"]) == (pytest.approx(100 * 3 / 6), pytest.approx(100 * 2 / 6))
    assert (released["Acc@0.25"], released["Acc@0.5"]) == (pytest.approx(100 * 2 / 6), pytest.approx(100 * 1 / 6))
    with pytest.raises(ValueError, match="convention must be one of"):
        score("scanrefer", predictions, scanrefer_annotations(), convention="paper")


def test_scan2cap_released_tokenisation_keeps_empty_rouge_tokens():
    assert normalize_caption("A chair. It is red,", "released") == "sos a chair .  it is red ,  eos"
    # Hypothesis "sos a chair .  it eos": split(" ") gives 7 tokens, one of them empty; the reference
    # "sos a chair . it eos" has 6. Field form: identical strings, ROUGE-L 1.
    annotations = {"annotations": [{"scene_id": "scene0", "object_id": "1", "ann_id": "0", "description": "a chair . it"}],
                   "boxes": {"scene0": {"1": {"box": [0, 0, 0, 2, 2, 2]}}}}
    proposals = [{"id": "p", "scene_id": "scene0", "box": [0, 0, 0, 2, 2, 2], "caption": "A chair. it"}]
    field = score("scan2cap", proposals, annotations, with_meteor=False)
    released = score("scan2cap", proposals, annotations, with_meteor=False, convention="released")
    assert field["ROUGE-L@0.5"] == pytest.approx(100.0)
    # Released: hypothesis "sos a chair .  it eos" (7 tokens incl. ""), reference "sos a chair .  it eos"
    # from "a chair . it" -> "sos a chair  .  it eos" (8 tokens, two empty). LCS = 7 (all hypothesis tokens).
    assert released["ROUGE-L@0.5"] == pytest.approx(100 * rouge_l(7 / 7, 7 / 8))
    assert released["CIDEr@0.5"] == pytest.approx(field["CIDEr@0.5"])  # CIDEr splits on any whitespace


def test_scanqa_released_em_is_a_fraction(write_jsonl, write_json):
    predictions = write_jsonl("answers.jsonl", [{"id": "q2", "answer": "two"}])
    released = score("scanqa", predictions, write_json("q.json", SCANQA), with_meteor=False, convention="released")
    assert released["EM"] == pytest.approx(0.25)
    assert score("scanqa", predictions, SCANQA, with_meteor=False)["EM"] == pytest.approx(25.0)


def test_cli_convention(write_jsonl, write_json, capsys):
    predictions = write_jsonl("answers.jsonl", [{"id": "q2", "answer": "two"}])
    annotations = write_json("q.json", SCANQA)
    assert main(["eval", "scanqa", "--predictions", str(predictions), "--annotations", str(annotations),
                 "--no-meteor", "--convention", "released"]) == 0
    assert '"EM": 0.25' in capsys.readouterr().out
    assert main(["eval", "vsibench", "--predictions", str(predictions), "--annotations", str(annotations),
                 "--convention", "released"]) == 1
    assert "vsibench has a single convention" in capsys.readouterr().err
