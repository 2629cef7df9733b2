"""The prediction driver (resume, torn lines, shards, deterministic merge) and `vega3d predict vsibench`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vega3d.cli import main
from vega3d.evaluation import score
from vega3d.evaluation.predict import read_lines, run_predictions, shard_path
from vega3d.evaluation.vsibench import released_answer, vsibench_prompt

SAMPLES = [{"id": f"q{i}", "x": i} for i in range(5)]


def counting(calls):
    def predict(sample):
        calls.append(sample["id"])
        return {"answer": str(sample["x"] * 2)}
    return predict


def test_one_line_per_sample_in_input_order(tmp_path):
    out = run_predictions(list(reversed(SAMPLES)), counting([]), tmp_path / "p.jsonl", 0, 1)
    lines = out.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["q4", "q3", "q2", "q1", "q0"]
    assert lines[0] == '{"answer": "8", "id": "q4"}'
    assert not shard_path(out, 0, 1).exists()


def test_resume_skips_written_ids_and_repairs_a_torn_last_line(tmp_path):
    fresh = run_predictions(SAMPLES, counting([]), tmp_path / "fresh.jsonl", 0, 1).read_bytes()
    out = tmp_path / "p.jsonl"
    shard_path(out, 0, 1).write_text('{"answer": "0", "id": "q0"}\n{"answer": "2", "id": "q1"}\n{"answer": "4", "id"')
    calls = []
    run_predictions(SAMPLES, counting(calls), out, 0, 1)
    assert calls == ["q2", "q3", "q4"]  # q2's torn line was cut off and predicted again
    assert out.read_bytes() == fresh
    calls.clear()
    run_predictions(SAMPLES, counting(calls), out, 0, 1)  # complete: nothing to do, same bytes
    assert calls == [] and out.read_bytes() == fresh


def test_ranks_write_shards_and_the_last_one_merges(tmp_path):
    fresh = run_predictions(SAMPLES, counting([]), tmp_path / "fresh.jsonl", 0, 1).read_bytes()
    out, calls = tmp_path / "p.jsonl", []
    assert run_predictions(SAMPLES, counting(calls), out, 1, 2) is None  # rank 0 not done yet
    assert calls == ["q1", "q3"] and not out.exists()
    assert run_predictions(SAMPLES, counting(calls), out, 0, 2) == out
    assert calls == ["q1", "q3", "q0", "q2", "q4"]
    assert out.read_bytes() == fresh  # byte-identical whatever the number of ranks
    assert not shard_path(out, 0, 2).exists() and not shard_path(out, 1, 2).exists()


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"data.jsonl: id 'q0' occurs twice \(sample 2\)"):
        run_predictions([SAMPLES[0], SAMPLES[0]], counting([]), tmp_path / "p.jsonl", 0, 1, source="data.jsonl")
    stale = tmp_path / "stale.jsonl"
    stale.write_text('{"answer": "1", "id": "other"}\n')
    with pytest.raises(ValueError, match=r"stale.jsonl: holds predictions for ids not in samples \(\['other'\]\)"):
        run_predictions(SAMPLES, counting([]), stale, 0, 1)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "q0"}\nnot json\n{"id": "q1"}\n')
    with pytest.raises(ValueError, match=r"broken.jsonl line 2"):
        read_lines(broken, repair=True)  # only a torn *last* line is repaired


def test_released_vsibench_prompts_and_answer_extraction():
    assert vsibench_prompt("How many chairs?", "object_counting") == (
        "These are frames of a video.\nHow many chairs?\nPlease answer the question using a single word or phrase.")
    assert vsibench_prompt("Which is closer?", "object_rel_distance", ["A. chair", "B. table"], pre_prompt="Look.") == (
        "Look.\nWhich is closer?\nOptions:\nA. chair\nB. table\nAnswer with the option's letter from the given choices directly.")
    with pytest.raises(ValueError, match="without options"):
        vsibench_prompt("Which?", "route_planning", [])
    assert released_answer("B. The chair") == "B"
    assert released_answer("3.5 meters") == "3.5"
    assert released_answer(" 3") == ""  # the released split(' ') keeps a leading empty word: scored 0


def _frames(folder, frames=4, size=(48, 64)):
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(frames):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def test_predict_vsibench_end_to_end_on_a_tiny_released_style_model(tmp_path, capsys):
    from vega3d.models import GenerativeSettings
    from vega3d.models.tiny import build_tiny_model, save_tiny, tiny_processor

    settings = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [6, 8]}, fusion="gated",
                                  fusion_options={"preset": "residual"}, projector="merger", projector_options={"hidden_dim": 8},
                                  resample="bilinear", visual_input="images")
    processor = tiny_processor(image_size=56)
    model_dir = save_tiny(tmp_path / "model", processor, build_tiny_model(processor, settings, seed=0))
    _frames(tmp_path / "arkitscenes" / "41069025")  # extracted frames; SCENE.mp4 is read the same way
    rows = [{"id": 1, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "object_counting",
             "question": "How many chairs?", "ground_truth": "2", "options": None},
            {"id": 2, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "route_planning",
             "question": "Which way?", "ground_truth": "A", "options": ["A. left", "B. right"]}]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "preds.jsonl"
    argv = ["predict", "vsibench", "--model", str(model_dir), "--data", str(data), "--out", str(out), "--device", "cpu",
            "--num-frames", "32", "--max-new-tokens", "2"]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["id"] for p in predictions] == [1, 2]
    assert all(p["answer"] == released_answer(p["raw"]) for p in predictions)
    metrics = score("vsibench", out, data)  # the existing evaluator reads the file as written
    assert metrics["num_samples"] == 2 and metrics["num_missing"] == 0
    before = out.read_bytes()
    assert main(argv) == 0 and out.read_bytes() == before  # resumed: nothing left to predict
    assert main(["predict", "vsibench", "--model", str(model_dir), "--data", str(tmp_path / "none.jsonl"), "--out", str(out)]) == 1
    assert "no such file" in capsys.readouterr().err
