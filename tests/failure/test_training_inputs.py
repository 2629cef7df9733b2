"""`vega3d train`: numeric options, data lines and model paths checked before loading; no empty run folder."""

from __future__ import annotations

import json

import pytest

from vega3d.cli import main
from vega3d.training import parse_config, read_records

BASE = {"model": "m", "data": {"train": "t.jsonl"}}


@pytest.mark.parametrize("section,key,value,message", [
    ("training", "lr_llm", -1e-5, r"training.lr_llm must be >= 0 \(0 freezes that part\); got -1e-05"),
    ("training", "learning_rate", -1, "training.learning_rate must be >= 0"),
    ("training", "num_train_epochs", "one", "training.num_train_epochs must be a number > 0; got 'one'"),
    ("training", "num_train_epochs", 0, "training.num_train_epochs must be > 0"),
    ("training", "max_steps", 0, r"training.max_steps must be > 0 \(or -1"),
    ("training", "per_device_train_batch_size", 1.5, "must be a positive integer"),
    ("training", "warmup_ratio", 1.0, r"training.warmup_ratio must be in \[0, 1\)"),
    ("training", "save_steps", 0, r"training.save_steps must be a whole number of steps >= 1 or a ratio in \(0, 1\)"),
    ("data", "num_frames", 0, "data.num_frames must be a positive integer"),
    ("data", "image_size", [0, 384], r"data.image_size must be two positive integers"),
])
def test_numeric_options_are_validated(section, key, value, message):
    values = {**BASE, section: {**BASE.get(section, {}), key: value}}
    with pytest.raises(ValueError, match=message):
        parse_config(values, source="run.yaml")


def test_all_learning_rates_zero_is_refused():
    with pytest.raises(ValueError, match="every learning rate is 0"):
        parse_config({**BASE, "training": {"lr_llm": 0, "lr_vision": 0, "lr_adapters": 0}})
    assert parse_config({**BASE, "training": {"lr_vision": 0}}).lr_vision == 0  # 0 freezes one part


def test_data_lines_without_an_answer_or_a_video_are_named(tmp_path, synthetic_scene):
    path = tmp_path / "train.jsonl"
    good = {"video": str(synthetic_scene), "conversations": [{"from": "human", "value": "<video>\nQ?"}, {"from": "gpt", "value": "A"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "conversations": good["conversations"][:1]}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2: no assistant turn"):
        read_records(path)
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "video": "scenes/nowhere"}) + "\n")
    with pytest.raises(FileNotFoundError, match=r"train.jsonl:3: video .*scenes/nowhere: no such scene folder"):
        read_records(path)


def test_same_named_videos_keep_distinct_store_identities(tmp_path, synthetic_scene):
    import shutil

    for group in ("a", "b"):
        shutil.copytree(synthetic_scene, tmp_path / group / "room")
    line = {"conversations": [{"from": "human", "value": "<video>\nQ?"}, {"from": "gpt", "value": "A"}]}
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({**line, "video": f"{g}/room"}) + "\n" for g in ("a", "b")))
    assert [r.video_id for r in read_records(path)] == ["a/room", "b/room"]


def test_failed_run_leaves_no_empty_run_folder_and_one_line(tmp_path, capsys):
    (tmp_path / "train.jsonl").write_text("")
    config = {"model": str(tmp_path / "no_model"), "data": {"train": "train.jsonl"},
              "training": {"output_dir": str(tmp_path / "run")}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["train", str(tmp_path / "run.json")]) == 1
    err = capsys.readouterr().err
    assert "no_model: not a model folder (no config.json)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
