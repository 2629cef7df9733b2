"""A resumed `vega3d train` run continues bit-for-bit; a checkpoint with missing or unexpected keys is an error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from vega3d.models.tiny import build_tiny_model, save_tiny, tiny_processor
from vega3d.training import build_trainer, parse_config, train

SETTINGS = {"backbone": "pixels", "feature_dim": 3, "backbone_options": {"grid": [4, 4]}}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    processor = tiny_processor(image_size=56)
    return save_tiny(tmp_path_factory.mktemp("base"), processor, build_tiny_model(processor, seed=1))


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory, synthetic_scene):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    lines = [{"id": f"q{i}", "video": str(synthetic_scene),
              "conversations": [{"from": "human", "value": f"<video>\nWhat is {i} + 1?"}, {"from": "gpt", "value": str(i + 1)}]}
             for i in range(2)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def config(base, jsonl, out):
    return parse_config({
        "model": str(base), "generative": SETTINGS,
        "data": {"train": str(jsonl), "num_frames": 2, "image_size": [56, 56]},
        # Constant rate from step 1: the checkpoint after step 1 already holds trained LLM and vision weights.
        "training": {"output_dir": str(out), "max_steps": 2, "save_steps": 1, "logging_steps": 1, "use_cpu": True,
                     "lr_llm": 1e-3, "lr_vision": 1e-3, "disable_tqdm": True, "warmup_steps": 0,
                     "lr_scheduler_type": "constant", "dataloader_num_workers": 0, "save_total_limit": None},
    })


class Killed(Exception):
    pass


class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        raise Killed(f"killed after saving step {state.global_step}")


def losses(folder):
    history = json.loads((folder / "train_summary.json").read_text())["log_history"]
    return {entry["step"]: (entry["loss"], entry["grad_norm"]) for entry in history if "loss" in entry}


def test_resumed_run_continues_bit_for_bit(tmp_path, base, jsonl):
    straight = train(config(base, jsonl, tmp_path / "straight"))
    trainer = build_trainer(config(base, jsonl, tmp_path / "resumed"))
    trainer.add_callback(KillAfterSave())
    with pytest.raises(Killed):
        trainer.train()
    resumed = train(config(base, jsonl, tmp_path / "resumed"))
    assert json.loads((resumed / "train_summary.json").read_text())["resumed_from"].endswith("checkpoint-1")
    expected, got = losses(straight), losses(resumed)
    assert sorted(got) == [1, 2] and got == expected  # step 1 from the killed run, step 2 after resuming
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    changed = [key for key in a if not torch.equal(a[key], b[key])]
    assert not changed, changed[:5]


def test_checkpoint_with_missing_or_renamed_weights_is_an_error(tmp_path, base, jsonl):
    trainer = build_trainer(config(base, jsonl, tmp_path / "run"))
    trainer.add_callback(KillAfterSave())
    with pytest.raises(Killed):
        trainer.train()
    weights = tmp_path / "run" / "checkpoint-1" / "model.safetensors"
    tensors = load_file(weights)
    key = next(k for k in tensors if k.startswith("visual."))
    tensors["stale." + key] = tensors.pop(key)
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"checkpoint-1.*missing.*visual\..*unexpected.*stale\.visual"):
        train(config(base, jsonl, tmp_path / "run"))


def test_run_failing_at_its_first_step_leaves_no_run_folder(tmp_path, base, capsys):
    from vega3d.cli import main

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        (frames / f"{i}.jpg").write_bytes(b"not a jpeg")
    line = {"video": "frames", "conversations": [{"from": "human", "value": "<video>\nQ?"}, {"from": "gpt", "value": "A"}]}
    (tmp_path / "train.jsonl").write_text(json.dumps(line) + "\n")
    run = {"model": str(base), "data": {"train": "train.jsonl", "num_frames": 2, "image_size": [56, 56]},
           "training": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "use_cpu": True, "disable_tqdm": True}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert main(["train", str(tmp_path / "run.json")]) == 1
    err = capsys.readouterr().err
    assert "frames/0.jpg: cannot read image" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
