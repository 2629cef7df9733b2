"""No output path is an input path; existing files need --overwrite; user mistakes are one line, no traceback."""

from __future__ import annotations

import json
import os

import pytest
import torch

from vega3d.cli import main
from vega3d.evaluation import EvaluationInputError, score
from vega3d.fusion import save_gates
from vega3d.models.tiny import build_tiny_model, save_tiny, tiny_processor

VSI = [{"id": 1, "question_type": "object_counting", "ground_truth": "3", "options": None}]


@pytest.fixture
def eval_files(tmp_path):
    predictions, annotations = tmp_path / "preds.jsonl", tmp_path / "vsi.json"
    predictions.write_text(json.dumps({"id": 1, "answer": "3"}) + "\n")
    annotations.write_text(json.dumps(VSI))
    return predictions, annotations


def run_eval(predictions, annotations, *extra):
    return main(["eval", "vsibench", "--predictions", str(predictions), "--annotations", str(annotations), *extra])


def one_line_error(capsys, text):
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_eval_never_writes_over_its_inputs_or_an_existing_file(eval_files, tmp_path, capsys):
    predictions, annotations = eval_files
    before = predictions.read_bytes(), annotations.read_bytes()
    for out in (predictions, annotations, tmp_path / "." / "preds.jsonl"):
        assert run_eval(predictions, annotations, "--out", str(out)) == 1
        one_line_error(capsys, "is an input of this command")
    assert (predictions.read_bytes(), annotations.read_bytes()) == before
    assert run_eval(predictions, annotations, "--out", str(tmp_path)) == 1
    one_line_error(capsys, "is a folder; give a file name")
    report = tmp_path / "report.json"
    report.write_text("mine")
    assert run_eval(predictions, annotations, "--out", str(report)) == 1
    one_line_error(capsys, "already exists; pass --overwrite")
    assert report.read_text() == "mine"
    assert run_eval(predictions, annotations, "--out", str(report), "--overwrite") == 0
    assert json.loads(report.read_text())["metrics"]


@pytest.mark.parametrize("box", [["0", "0", "0", "1", "1", "1"], [True, 0, 0, 1, 1, 1]])
def test_non_numeric_boxes_are_rejected(box, tmp_path):
    annotations = {"annotations": [{"scene_id": "s", "object_id": "1", "ann_id": "0", "eval_type": "unique"}],
                   "boxes": {"s": {"1": {"box": [0, 0, 0, 1, 1, 1]}}}}
    with pytest.raises(EvaluationInputError, match=r"prediction #1: a box is .*six finite numbers"):
        score("scanrefer", [{"id": "s|1|0", "box": box}], annotations)


def test_ask_gates_may_not_overwrite_the_model(tmp_path, synthetic_scene, capsys):
    processor = tiny_processor(image_size=56)
    model = save_tiny(tmp_path / "model", processor, build_tiny_model(processor, seed=0))
    weights = model / "model.safetensors"
    before = weights.read_bytes()
    capsys.readouterr()  # the save's progress bar
    for extra in ([], ["--overwrite"]):
        assert main(["ask", str(synthetic_scene), "Q?", "--model", str(model), "--gates", str(weights), *extra]) == 1
        one_line_error(capsys, "model.safetensors: is an input of this command")
    assert weights.read_bytes() == before
    for extra, message in ((["--image-size", "0", "0"], "--image-size and --max-new-tokens must be positive"),
                           (["--device", "tpu"], "--device 'tpu': not a torch device")):
        assert main(["ask", str(synthetic_scene), "Q?", "--model", str(model), *extra]) == 1
        one_line_error(capsys, message)


@pytest.mark.parametrize("damage, message", [
    ("config.json", "model: cannot load (It looks like the config file"),
    ("model.safetensors", "model: cannot load (Error while deserializing header"),
])
def test_ask_with_a_broken_checkpoint_is_one_line(tmp_path, synthetic_scene, capsys, damage, message):
    processor = tiny_processor(image_size=56)
    model = save_tiny(tmp_path / "model", processor, build_tiny_model(processor, seed=0))
    (model / damage).write_bytes((model / damage).read_bytes()[:40])
    capsys.readouterr()  # the save's progress bar
    assert main(["ask", str(synthetic_scene), "Q?", "--model", str(model), "--frames", "2"]) == 1
    one_line_error(capsys, message)


def test_empty_gates_tensor_is_an_error_naming_the_file(tmp_path, capsys):
    with pytest.raises(ValueError, match="g.safetensors: empty tensor"):
        save_gates(tmp_path / "g.safetensors", torch.zeros(0, 3, 8, 8), torch.zeros(0, 2, 2), model="m", weights="w",
                   random_weights=True)
    from safetensors.torch import save_file

    save_file({"frames": torch.zeros(0, 3, 8, 8, dtype=torch.uint8), "gates": torch.zeros(0, 2, 2)}, tmp_path / "e.safetensors",
              metadata={"model": "m", "weights": "w", "random_weights": "true"})
    assert main(["gates", str(tmp_path / "e.safetensors")]) == 1
    one_line_error(capsys, "e.safetensors: empty tensor")


def test_debug_flag_and_variable_show_the_traceback(tmp_path, monkeypatch):
    missing = tmp_path / "missing.safetensors"
    assert main(["gates", str(missing)]) == 1
    with pytest.raises(FileNotFoundError):
        main(["--debug", "gates", str(missing)])
    monkeypatch.setenv("VEGA3D_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["gates", str(missing)])


def test_unexpected_library_errors_are_one_line_with_a_hint(tmp_path, capsys, monkeypatch):
    import vega3d.fusion.gates as gates

    class LibraryError(Exception):
        pass

    def broken(path):
        raise LibraryError("deep inside a library\nsecond line")

    monkeypatch.setattr(gates, "load_gates", broken)
    assert main(["gates", str(tmp_path / "g.safetensors")]) == 1
    one_line_error(capsys, "error: deep inside a library second line (LibraryError; run with --debug for the traceback)")
    assert os.environ.get("VEGA3D_DEBUG") is None


@pytest.mark.parametrize("damage", ["config.json", "model.safetensors"])
def test_awareness_with_broken_backbone_weights_is_one_line(tmp_path, synthetic_scene, capsys, damage):
    from vega3d.backbones.tiny import save_tiny_model

    folder = save_tiny_model("dinov3-vitl16", tmp_path / "dino", seed=0)
    (folder / damage).write_bytes((folder / damage).read_bytes()[:40])
    capsys.readouterr()
    assert main(["awareness", str(synthetic_scene), "--backbone", "dinov3-vitl16", "--weights", str(folder),
                 "--out", str(tmp_path / "out"), "--frames", "2", "--plots", "0"]) == 1
    one_line_error(capsys, f"backbone dinov3-vitl16 --weights {folder}: cannot load (")
