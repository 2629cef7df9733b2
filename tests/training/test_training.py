"""Training pieces: JSONL format, label masking, config checks, parameter groups, schedule, resumable runs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vega3d.cli import main
from vega3d.models import GenerativeSettings, Vega3DQwen2_5_VLForConditionalGeneration
from vega3d.models.inputs import IGNORE_INDEX
from vega3d.models.tiny import build_tiny_model, save_tiny, tiny_processor
from vega3d.training import build_trainer, parse_config, read_records, to_messages

SETTINGS = {"backbone": "pixels", "feature_dim": 3, "backbone_options": {"grid": [4, 4]}}


@pytest.fixture(scope="module")
def processor():
    return tiny_processor(image_size=56)


@pytest.fixture(scope="module")
def base(tmp_path_factory, processor):
    return save_tiny(tmp_path_factory.mktemp("base"), processor, build_tiny_model(processor, seed=1))


@pytest.fixture(scope="module")
def data(tmp_path_factory, synthetic_scene):
    folder = tmp_path_factory.mktemp("data")
    lines = [{"id": f"q{i}", "video": str(synthetic_scene),
              "conversations": [{"from": "human", "value": f"<video>\nWhat is {i} + 1?"}, {"from": "gpt", "value": str(i + 1)}]}
             for i in range(6)]
    (folder / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_llava_turns_become_chat_messages():
    messages = to_messages([{"from": "human", "value": "Look.\n<video>\nWhere is the chair?"},
                            {"from": "gpt", "value": "left"}, {"from": "human", "value": "Sure?"},
                            {"from": "gpt", "value": "yes"}], "x")
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "Look."}, {"type": "video"},
                                     {"type": "text", "text": "Where is the chair?"}]},
        {"role": "assistant", "content": "left"},
        {"role": "user", "content": [{"type": "text", "text": "Sure?"}]},
        {"role": "assistant", "content": "yes"},
    ]
    with pytest.raises(ValueError, match="exactly one <video> mark; found 0"):
        to_messages([{"from": "human", "value": "no video"}, {"from": "gpt", "value": "x"}], "x")
    with pytest.raises(ValueError, match="'from' in"):
        to_messages([{"from": "robot", "value": "<video>"}], "x")


def test_bad_jsonl_lines_are_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"video": "a", "conversations": []}\n{not json}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: the conversation must contain exactly one"):
        read_records(path)
    path.write_text('{"conversations": []}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing key 'video'"):
        read_records(path)


def test_labels_are_the_assistant_turns_only(processor):
    messages = to_messages([{"from": "human", "value": "<video>\nQ1?"}, {"from": "gpt", "value": "A1"},
                            {"from": "human", "value": "Q2?"}, {"from": "gpt", "value": "A2"}], "x")
    example = processor.example(messages, processor.video(torch.rand(2, 3, 56, 56)))
    ids, labels = example["input_ids"][0], example["labels"][0]
    decode = processor.tokenizer.decode
    assert decode(ids) == processor.render(messages).replace("<|video_pad|>", "<|video_pad|>" * 4)
    supervised = labels != IGNORE_INDEX
    assert torch.equal(labels[supervised], ids[supervised])
    assert decode(ids[supervised]) == "A1<|im_end|>\nA2<|im_end|>\n"


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['optimiser'\]"):
        parse_config({"model": "m", "data": {"train": "t.jsonl"}, "optimiser": {}})
    with pytest.raises(ValueError, match="'offline' needs data.store"):
        parse_config({"model": "m", "data": {"train": "t.jsonl", "generative_source": "offline"}})
    with pytest.raises(ValueError, match="unknown data key"):
        parse_config({"model": "m", "data": {"train": "t.jsonl", "frames": 8}})
    config = tmp_path / "run.yaml"
    config.write_text("model: m\ndata: {train: t.jsonl}\ntraining: {warmup_ratio: 0.1}\n")
    from vega3d.training import read_config

    parsed = read_config(config)
    assert parsed.training_arguments["warmup_steps"] == 0.1 and parsed.data.train == tmp_path / "t.jsonl"
    config.write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match="run.yaml: cannot parse"):
        read_config(config)


def test_parameter_groups_and_warmup_cosine_schedule(tmp_path, base, data):
    config = parse_config({
        "model": str(base), "generative": SETTINGS,
        "data": {"train": str(data / "train.jsonl"), "num_frames": 2, "image_size": [56, 56]},
        "training": {"output_dir": str(tmp_path), "lr_llm": 1e-3, "lr_vision": 0, "lr_adapters": 4e-3,
                     "warmup_ratio": 0.1, "use_cpu": True},
    })
    trainer = build_trainer(config)
    model = trainer.model
    trainer.create_optimizer_and_scheduler(num_training_steps=100)
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert set(groups) == {"llm", "adapters"}  # lr_vision = 0 freezes the vision tower
    assert not any(p.requires_grad for p in model.model.visual.parameters())
    assert {id(p) for p in groups["adapters"]["params"]} == {id(p) for p in model.adapter_parameters()}
    trained = {id(p) for g in groups.values() for p in g["params"]}
    assert trained == {id(p) for n, p in model.named_parameters() if not n.startswith("model.visual.")}
    scheduler, peak = trainer.lr_scheduler, {"llm": 1e-3, "adapters": 4e-3}
    expected = {0: 0.0, 5: 0.5, 10: 1.0, 55: 0.5 * (1 + math.cos(math.pi * 0.5)), 100: 0.0}  # 10 warm-up steps, cosine
    for step in range(101):
        if step in expected:
            for name, group in zip(("llm", "adapters"), trainer.optimizer.param_groups):
                assert group["lr"] == pytest.approx(peak[group["name"]] * expected[step], abs=1e-12), (step, name)
        trainer.optimizer.step()
        scheduler.step()


def test_unknown_training_argument_is_a_config_error(tmp_path, base, data):
    config = parse_config({"model": str(base), "data": {"train": str(data / "train.jsonl")},
                           "training": {"output_dir": str(tmp_path), "learning_rat": 1}}, source="run.yaml")
    with pytest.raises(ValueError, match="run.yaml: training: .*learning_rat"):
        build_trainer(config)


def test_train_command_writes_a_loadable_model_and_resumes(tmp_path, base, data):
    config = {"model": str(base), "generative": SETTINGS,
              "data": {"train": str(data / "train.jsonl"), "num_frames": 3, "image_size": [56, 56]},
              "training": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "per_device_train_batch_size": 2,
                           "save_steps": 2, "logging_steps": 1, "use_cpu": True, "lr_llm": 1e-3, "disable_tqdm": True,
                           "activation_checkpointing": True, "bf16": True}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    assert main(["train", str(path)]) == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["resumed_from"] is None and any("loss" in entry for entry in summary["log_history"])
    model = Vega3DQwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "run")
    assert model.generative == GenerativeSettings.from_dict(SETTINGS)
    config["training"]["max_steps"] = 3
    path.write_text(json.dumps(config))
    assert main(["train", str(path)]) == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2")
    assert summary["log_history"][-1]["step"] == 3


def test_images_branch_trains_on_the_released_inputs(tmp_path, processor):
    """visual_input=images: training examples are the frames as released images (518 resize, system prompt)."""
    import numpy as np
    from PIL import Image

    from vega3d.models.generative import GenerativeSource
    from vega3d.training.data import ConversationDataset, collate

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(frames / f"{i}.png")
    (tmp_path / "train.jsonl").write_text(json.dumps({"video": "frames", "conversations": [
        {"from": "human", "value": "<video>\nHow many?"}, {"from": "gpt", "value": "2"}]}) + "\n")
    settings = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [4, 4]}, projector="merger",
                                  projector_options={"hidden_dim": 8}, resample="bilinear", visual_input="images")
    model = build_tiny_model(processor, settings, seed=0)
    dataset = ConversationDataset(read_records(tmp_path / "train.jsonl"), processor, num_frames=32,
                                  generative=GenerativeSource(settings))
    item = dataset[0]
    assert item["image_grid_thw"].shape == (2, 3) and "pixel_values_videos" not in item
    assert item["generative_tokens"].shape[0] == 2
    text = processor.tokenizer.decode(item["input_ids"])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.") and text.count("<|vision_start|>") == 2
    batch = collate([item, dataset[0]], processor.tokenizer.pad_token_id)
    assert batch["pixel_values"].shape[0] == 2 * item["pixel_values"].shape[0]
    assert torch.isfinite(model(**batch).loss)
