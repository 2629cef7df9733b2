"""Bad input gets an error naming the file, the line and the id; `vega3d eval` end to end."""

from __future__ import annotations

import json

import pytest

from vega3d.cli import main
from vega3d.evaluation import EvaluationInputError, score

VSI = [
    {"id": 1, "question_type": "object_counting", "ground_truth": "3", "options": None},
    {"id": 2, "question_type": "route_planning", "ground_truth": "B", "options": ["A. x", "B. y"]},
]


def test_malformed_jsonl_line_is_named(write_jsonl):
    predictions = write_jsonl("preds.jsonl", [{"id": 1, "answer": "3"}, '{"id": 2, "answer": "B"'])
    with pytest.raises(EvaluationInputError, match=r"preds\.jsonl line 2: not valid JSON"):
        score("vsibench", predictions, VSI)


def test_prediction_without_ground_truth_names_line_and_id(write_jsonl):
    predictions = write_jsonl("preds.jsonl", [{"id": 1, "answer": "3"}, "", {"id": 99, "answer": "A"}])
    with pytest.raises(EvaluationInputError, match=r"preds\.jsonl line 3: id '99' has no ground truth"):
        score("vsibench", predictions, VSI)


def test_duplicated_prediction_id_names_both_lines(write_jsonl):
    predictions = write_jsonl("preds.jsonl", [{"id": 2, "answer": "B"}, {"id": "2", "answer": "A"}])
    with pytest.raises(EvaluationInputError, match=r"line 2: duplicated id '2' \(first seen at .*preds\.jsonl line 1\)"):
        score("vsibench", predictions, VSI)


def test_annotation_files_json_jsonl_and_their_errors(tmp_path, write_jsonl):
    predictions = [{"id": 1, "answer": "3"}, {"id": 2, "answer": "B"}]
    rows = write_jsonl("vsi_rows.jsonl", VSI)
    assert score("vsibench", predictions, rows)["overall"] == 100.0
    broken = write_jsonl("broken.jsonl", [VSI[0], "{oops"])
    with pytest.raises(EvaluationInputError, match=r"broken\.jsonl line 2: not valid JSON"):
        score("vsibench", predictions, broken)
    (tmp_path / "broken.json").write_text('[{"id": 1}\n')
    with pytest.raises(EvaluationInputError, match=r"broken\.json: not valid JSON .* at line 2"):
        score("vsibench", predictions, tmp_path / "broken.json")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"id": 1, "answer": "caf\xe9"}\n')
    with pytest.raises(EvaluationInputError, match=r"latin1\.jsonl line 1: not valid JSON \(not UTF-8 text\)"):
        score("vsibench", tmp_path / "latin1.jsonl", VSI)
    with pytest.raises(EvaluationInputError, match="annotations file not found: .*nowhere.json"):
        score("vsibench", predictions, tmp_path / "nowhere.json")


def test_in_memory_predictions_are_named_by_position():
    with pytest.raises(EvaluationInputError, match=r"prediction #2: id '1' lacks field\(s\) answer"):
        score("vsibench", [{"id": 2, "answer": "B"}, {"id": 1}], VSI)
    with pytest.raises(EvaluationInputError, match=r"prediction #1: expected an object with an 'id' field"):
        score("vsibench", [{"answer": "B"}], VSI)


def test_duplicated_annotation_id():
    with pytest.raises(EvaluationInputError, match=r"record #3: duplicated id '1' \(first at record #1\)"):
        score("vsibench", [], [*VSI, VSI[0]])


@pytest.mark.parametrize("box, message", [
    ([0, 0, 0, 1, 1], "a box is"),
    ([0, 0, 0, 1, -1, 1], "a box is .* sizes >= 0"),
    ("big", "a box is"),
])
def test_bad_predicted_box(box, write_jsonl, message):
    annotations = {"annotations": [{"scene_id": "s", "object_id": "1", "ann_id": "0", "eval_type": "unique"}],
                   "boxes": {"s": {"1": {"box": [0, 0, 0, 1, 1, 1]}}}}
    predictions = write_jsonl("p.jsonl", [{"id": "s|1|0", "box": box}])
    with pytest.raises(EvaluationInputError, match=rf"p\.jsonl line 1: {message}"):
        score("scanrefer", predictions, annotations)


def test_grounding_annotations_need_the_box_table(write_json):
    published_only = write_json("ScanRefer_filtered_val.json", [{"scene_id": "s", "object_id": "1", "ann_id": "0"}])
    with pytest.raises(EvaluationInputError, match=r"ScanRefer_filtered_val\.json: expected \{\"annotations\""):
        score("scanrefer", [], published_only)
    missing_box = {"annotations": [{"scene_id": "s", "object_id": "7", "ann_id": "0", "eval_type": "unique"}],
                   "boxes": {"s": {}}}
    with pytest.raises(EvaluationInputError, match="no box for object '7' of scene 's'"):
        score("scanrefer", [], missing_box)


def test_unknown_benchmark_or_option():
    with pytest.raises(ValueError, match="unknown benchmark 'scannet'"):
        score("scannet", [], [])
    with pytest.raises(ValueError, match="vsibench takes no option.s. with_meteor"):
        score("VSI-Bench", [], VSI, with_meteor=False)


def test_cli_prints_the_paper_row_and_writes_json(tmp_path, write_jsonl, write_json, capsys):
    predictions = write_jsonl("preds.jsonl", [{"id": 1, "answer": "3.3"}, {"id": 2, "answer": "B"}])
    out = tmp_path / "reports" / "vsi.json"
    assert main(["eval", "vsibench", "--predictions", str(predictions),
                 "--annotations", str(write_json("vsi.json", VSI)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split("\t") == ["Benchmark", "Avg.", "Obj. Count", "Abs. Dist.", "Obj. Size", "Room Size", "Rel. Dist.",
                                      "Rel. Dir.", "Route Plan", "Appr. Order"]
    # counting: |3.3 - 3| / 3 = 0.1 -> thresholds 0.50 .. 0.90 -> 90; route planning 100; mean 95.
    assert printed[1].split("\t") == ["VSI-Bench", "95.0", "90.0", "-", "-", "-", "-", "-", "100.0", "-"]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "vsibench"
    assert report["metrics"] == score("vsibench", predictions, VSI)
    assert [path.name for path in out.parent.iterdir()] == ["vsi.json"]  # no temporary file left


def test_cli_sqa3d_takes_both_files_and_reports_errors(tmp_path, write_jsonl, write_json, capsys):
    questions = write_json("q.json", {"questions": [{"question_id": 7, "question": "Is it on?"}]})
    answers = write_json("a.json", {"annotations": [{"question_id": 7, "answers": [{"answer": "yes"}]}]})
    good = write_jsonl("good.jsonl", [{"id": 7, "answer": "Yes."}])
    assert main(["eval", "sqa3d", "--predictions", str(good), "--annotations", str(questions), str(answers)]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["Benchmark\tEM", "SQA3D\t100.0"]
    bad = write_jsonl("bad.jsonl", [{"id": 7, "answer": "yes"}, {"id": 8, "answer": "no"}])
    out = tmp_path / "never.json"
    assert main(["eval", "sqa3d", "--predictions", str(bad), "--annotations", str(questions), str(answers),
                 "--out", str(out)]) == 1
    assert "bad.jsonl line 2: id '8' has no ground truth" in capsys.readouterr().err
    assert not out.exists()
    assert main(["eval", "vsibench", "--predictions", str(good), "--annotations", str(questions), str(answers)]) == 1
    assert "vsibench takes one file" in capsys.readouterr().err
