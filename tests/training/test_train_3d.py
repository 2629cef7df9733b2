"""3D training (Alg. 1, LLaVA-Video): processed records -> model inputs, task-grouped steps, the released
learning-rate groups, and a real 2-process data-parallel run equal to the 1-process run."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import config_3d
from forked_ranks import run_forked_ranks
from room3d import IMAGE_SIZE, SCENE
from safetensors.torch import load_file

from vega3d.models.llava_prompts import IGNORE_INDEX, training_example
from vega3d.prepare.synthetic_scan import room_boxes
from vega3d.scenes import load_scene, sample_frames
from vega3d.training import build_trainer, parse_config
from vega3d.training.sampler import TaskGroupedSampler, task_id
from vega3d.training.scene_tasks import SceneTaskDataset, SceneVideos, collate_scene_tasks, read_task_records


def record(dataset, **extra):
    return {"id": 0, "video": f"scannet/{SCENE}", "metadata": {"dataset": dataset, **extra.pop("metadata", {})},
            "conversations": [{"from": "human", "value": "<image>Identify it."}, {"from": "gpt", "value": "<ground>"}], **extra}


def test_bad_records_are_named_by_file_and_line(tmp_path, room3d):
    good = record("scanqa")
    path = tmp_path / "records.json"
    bad = {k: v for k, v in good.items() if k != "video"}
    path.write_text(json.dumps([good, bad], indent=2))
    line = path.read_text().splitlines().index("  {", 2) + 1  # the second record starts here
    with pytest.raises(ValueError, match=rf"records.json:{line}: missing key 'video'"):
        read_task_records(path)
    path.write_text(json.dumps([good, record("scanqa2")]))
    with pytest.raises(ValueError, match=r"records.json:1: metadata.dataset 'scanqa2' is not one of"):
        read_task_records(path)
    path.write_text(json.dumps([record("scanrefer", metadata={"object_id": "x"})]))
    with pytest.raises(ValueError, match=r"records.json:1: metadata.object_id must be object id"):
        read_task_records(path)
    path.write_text('[{"video": "a",\n  "conversations": }]')
    with pytest.raises(ValueError, match=r"records.json:2: not a JSON list of records"):
        read_task_records(path)
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_text(json.dumps(good) + "\n{not json}\n")
    with pytest.raises(ValueError, match=r"records.jsonl:2: not valid JSON"):
        read_task_records(jsonl)
    mixture = tmp_path / "multi.yaml"
    mixture.write_text('datasets:\n  - json_path: records.json\n    sampling_strategy: "first:10%"\n')
    with pytest.raises(ValueError, match=r"multi.yaml: dataset 1: sampling_strategy 'first:10%' is not supported"):
        read_task_records(mixture)
    # an object id the boxes file has no box for (null: an id without vertices), and a missing scene folder
    boxes = tmp_path / "scannet_train_gt_box.json"
    boxes.write_text(json.dumps({f"scannet/{SCENE}": [room_boxes()[0], None, room_boxes()[2]]}))
    path.write_text(json.dumps([good, record("scanrefer", metadata={"object_id": "1"})]))
    videos = SceneVideos(room3d["scenes"], 2, (IMAGE_SIZE, IMAGE_SIZE))
    with pytest.raises(ValueError, match=rf"records.json:1: object id 1 has no box in .*scannet_train_gt_box.json for scene {SCENE}"):
        SceneTaskDataset(read_task_records(path), None, videos, boxes)
    path.write_text(json.dumps([{**good, "video": "scannet/scene0999_00"}]))
    with pytest.raises(FileNotFoundError, match=r"records.json:1: scene folder .*scene0999_00 does not exist"):
        SceneTaskDataset(read_task_records(path), None, videos, boxes)


def test_items_are_what_the_model_takes(tmp_path, room3d, tiny3d):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny3d)
    boxes = tmp_path / "scannet_train_gt_box.json"
    table = room_boxes()
    boxes.write_text(json.dumps({f"scannet/{SCENE}": [table[0], None, *table[2:]]}))  # id 1 has no box
    path = tmp_path / "records.json"
    path.write_text(json.dumps([record("multi3drefer", metadata={"object_id": ["3", "0"]}),
                                record("scan2cap", box_input=table[2],
                                       conversations=[{"from": "human", "value": "<image> at <coord> ?"}, {"from": "gpt", "value": "A crate."}]),
                                record("sqa3d")]))
    videos = SceneVideos(room3d["scenes"], 3, (28, 28))
    dataset = SceneTaskDataset(read_task_records(path), tokenizer, videos, boxes)
    assert dataset.task_grouping == ([2, 1, 0], [3, 6, 3])  # task ids, word counts
    grounding, caption, qa = dataset[0], dataset[1], dataset[2]
    frames = sample_frames(load_scene(room3d["scenes"] / SCENE), 3, (28, 28))
    full = sample_frames(load_scene(room3d["scenes"] / SCENE), 3, (IMAGE_SIZE, IMAGE_SIZE))
    assert torch.allclose(grounding["pixel_values_videos"], frames.images * 2 - 1)
    assert torch.equal(grounding["world_coords"], full.world[:, ::2, ::2])  # nearest: every 2nd pixel of 56 -> 28
    assert torch.equal(grounding["boxes"], torch.tensor([table[0], *table[2:]]))
    assert grounding["object_labels"] == [2, 0]  # ids 3 and 0 among the boxes present (0, 2, 3, 4)
    assert (grounding["labels"] == IGNORE_INDEX).all() and grounding["coord_boxes"] is None
    ids, labels = training_example(tokenizer, json.loads(path.read_text())[2]["conversations"])
    assert qa["input_ids"].tolist() == ids and qa["labels"].tolist() == labels and qa["boxes"] is None
    assert caption["coord_boxes"].tolist() == pytest.approx(table[2])
    batch = collate_scene_tasks([qa, grounding], tokenizer.pad_token_id)
    length = max(len(qa["input_ids"]), len(grounding["input_ids"]))
    assert batch["input_ids"].shape == (2, length) and batch["attention_mask"].sum(1).tolist() == [len(qa["input_ids"]), len(grounding["input_ids"])]
    assert batch["boxes"][0] is None and batch["object_labels"] == [[], [2, 0]]
    assert "boxes" not in collate_scene_tasks([qa, caption], tokenizer.pad_token_id)


def test_released_groups_and_task_grouped_steps(tmp_path, room3d, tiny3d):
    config = parse_config(config_3d(room3d, tiny3d, tmp_path / "run", lr_llm=1e-5, lr_vision=2e-6, lr_adapters=1e-5,
                                    per_device_train_batch_size=1, gradient_accumulation_steps=2))
    trainer = build_trainer(config)
    groups = {g["name"]: g for g in trainer.create_optimizer().param_groups}
    assert {name: g["lr"] for name, g in groups.items()} == {"llm": 1e-5, "vision": 2e-6}  # no adapters: no branch
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert all(names[id(p)].startswith("model.vision_tower.") for p in groups["vision"]["params"])
    assert sum(len(g["params"]) for g in groups.values()) == len(names)  # everything trains
    assert any(names[id(p)].startswith("grounding_head.") for p in groups["llm"]["params"])
    loader = trainer.get_train_dataloader()
    assert isinstance(loader.batch_sampler.sampler, TaskGroupedSampler)
    tasks = [task_id(trainer.train_dataset.records[i].record) for batch in loader.batch_sampler for i in batch]
    steps = [tasks[i:i + 2] for i in range(0, len(tasks), 2)]
    assert all(len(set(step)) == 1 for step in steps) and {s[0] for s in steps} == {0, 1, 2}


def test_two_processes_equal_one_process(tmp_path, room3d, tiny3d, trained3d):
    """2 ranks (gloo, CPU; torchrun's env:// variables), 1 sample per rank = the 1-process run of 2 per step.
    The ranks are forked from this process (see forked_ranks.py), so they do not import torch again."""
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(config_3d(room3d, tiny3d, tmp_path / "run", per_device_train_batch_size=1)))
    run_forked_ranks(["train", str(config)], tmp_path)
    one, two = (json.loads((folder / "train_summary.json").read_text())["log_history"] for folder in (trained3d, tmp_path / "run"))
    losses = [[entry["loss"] for entry in history if "loss" in entry] for history in (one, two)]
    assert len(losses[0]) == 4 and losses[1] == pytest.approx(losses[0], rel=1e-5)
    start, a, b = (load_file(folder / "model.safetensors") for folder in (tiny3d, trained3d, tmp_path / "run"))
    assert all(torch.allclose(a[key], b[key], atol=1e-5) for key in a)
    moved = {key.split(".")[0] + "." + key.split(".")[1] for key in a if not torch.equal(a[key], start[key])}
    assert {"model.vision_tower", "model.language_model", "grounding_head.object_mlp"} <= moved


def test_bf16_and_gradient_checkpointing(tmp_path, room3d, tiny3d, trained3d):
    """The released precision and memory settings are TrainingArguments keys: bf16 autocast and gradient
    checkpointing give the fp32 run's losses to bf16 precision."""
    config = parse_config(config_3d(room3d, tiny3d, tmp_path / "run", bf16=True, activation_checkpointing=True, max_steps=2))
    trainer = build_trainer(config)
    trainer.train()
    assert trainer.model.model.language_model.gradient_checkpointing
    reference = [e["loss"] for e in json.loads((trained3d / "train_summary.json").read_text())["log_history"] if "loss" in e]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses == pytest.approx(reference[:2], rel=0.05)


def test_a_new_generative_branch_trains_online(tmp_path, room3d, tiny3d):
    """`generative:` attaches a new branch to a checkpoint without one; its tokens come from the frozen
    backbone online (the weight-free `pixels` backbone here) and its adapters train at lr_adapters."""
    values = config_3d(room3d, tiny3d, tmp_path / "run", max_steps=2, lr_adapters=1e-2)
    values["generative"] = {"backbone": "pixels", "feature_dim": 3, "backbone_options": {"grid": [2, 2]},
                            "fusion": "gated", "fusion_options": {"preset": "reference"}}
    trainer = build_trainer(parse_config(values))
    groups = {g["name"]: g["lr"] for g in trainer.create_optimizer().param_groups}
    assert groups == {"llm": 1e-3, "vision": 1e-4, "adapters": 1e-2}
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if k.startswith("model.generative_projector.")}
    item = trainer.train_dataset[0]
    assert item["generative_tokens"].shape == (4, 2, 2, 3)
    trainer.train()
    after = trainer.model.state_dict()
    assert before and all(not torch.equal(before[k], after[k]) for k in before)


def test_offline_tokens_from_vega3d_extract_equal_online(tmp_path, room3d, tiny3d):
    from vega3d.cli import main

    assert main(["extract", str(room3d["scenes"]), "--backbone", "pixels", "--out", str(tmp_path / "store"), "--frames", "4",
                 "--image-size", str(IMAGE_SIZE), str(IMAGE_SIZE), "--grid", "2", "2"]) == 0
    tokens = {}
    for source in ("online", "offline"):
        values = config_3d(room3d, tiny3d, tmp_path / source)
        values["generative"] = {"backbone": "pixels", "feature_dim": 3, "backbone_options": {"grid": [2, 2]}, "fusion": "gated"}
        values["data"].update(generative_source=source, store=str(tmp_path / "store") if source == "offline" else None)
        tokens[source] = build_trainer(parse_config(values)).train_dataset[0]["generative_tokens"]
    assert torch.equal(tokens["online"], tokens["offline"])
