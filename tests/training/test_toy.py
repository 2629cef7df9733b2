"""The proof that it learns, small enough for CI: a tiny random Qwen2.5-VL on the toy geometry task.

The full run (both scans, all frames, more epochs) is benchmarks/toy_geometry.py; its numbers are in
docs/training.md.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vega3d.scenes import load_scene
from vega3d.training.toy import QUESTIONS, build_toy_task, depth_image, evaluate_toy_variant, prepare_toy, train_toy_variant


@pytest.fixture(scope="module")
def one_thread():
    # Training steps of a tiny model are dominated by thread synchronisation on shared cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# One scan, 5 epochs of batch 8 at lr_adapters 3e-2 (175 steps) keep this short; benchmarks/toy_geometry.py
# runs both scans for longer, benchmarks/toy_seeds.py this setting over seeds. The task, and each variant's
# training, is a fixture of its own: built once, shared by the checks below. Gated held-out accuracy (0.718
# needed; the baseline stays at 0.382 or 0.618) at seeds 0-4, measured: this setting 0.934 / 0.382 / 0.934 /
# 0.382 / 0.908; 6 epochs at lr_adapters 3e-2 0.895 / 0.382 / 0.934 / 0.382 / 0.829; the setting before (6
# epochs, lr_adapters 1e-2) 0.842 at seed 0 and 0.382 at seeds 1-4; 4 epochs at 3e-2 0.382 / - / 0.789 / - /
# 0.382 (at 5e-2, 1e-1, or lr 3e-3: 0.382 at seeds 0 and 2); 6 epochs at 5e-2 0.908 / 0.382 / 0.829; batch
# 16 (6 epochs, lr 3e-3 or 4e-3) 0.382. A run either reads the depth or answers one word for every held-out
# clip: at seeds 1 and 3 no setting tried reads it. Also measured and not enough: one LLM layer (no faster),
# half the clips (frame_step 2: no longer generalises). A step (~15 ms on a quiet machine, timed without a
# profiler) is model compute: forward and backward ~14 ms (the frozen vision tower ~2 of them), AdamW 0.6.
TRAINING = {"epochs": 5, "batch_size": 8, "lr_adapters": 3e-2}
@pytest.fixture(scope="module")
def toy(tmp_path_factory, hololens_scene):
    return prepare_toy([hololens_scene], tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def gated(toy, one_thread):
    return train_toy_variant(toy, "gated", **TRAINING)


@pytest.fixture(scope="module")
def baseline(toy, one_thread):
    return train_toy_variant(toy, "no_generative_branch", **TRAINING)


# Held-out scores are fixtures of their own: a test of fitting does not wait for them.
@pytest.fixture(scope="module")
def gated_scores(toy, gated, one_thread):
    return evaluate_toy_variant(toy, gated)


@pytest.fixture(scope="module")
def baseline_scores(toy, baseline, one_thread):
    return evaluate_toy_variant(toy, baseline)


def test_toy_answers_come_from_the_depth(tmp_path, tabletop_scene):
    summary = build_toy_task([tabletop_scene], tmp_path, image_size=28, frame_step=5)
    records = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert summary["train"] == len(records) and len(records) % (2 * len(QUESTIONS)) == 0  # clip + mirror, 2 questions
    by_id = {r["id"]: r["conversations"][1]["value"] for r in records}
    mirrored = [i for i in by_id if "_mirror_" in i]
    assert mirrored and all(by_id[i.replace("_mirror", "")] == by_id[i] for i in mirrored if i.endswith("_view"))
    scene = load_scene(tabletop_scene)
    frames = scene.usable_frames()[::5]
    medians = {"near": [], "far": []}  # clip medians computed here from the raw depth, split by the given answer
    for clip_id, answer in by_id.items():
        if clip_id.endswith("_view") and "_mirror" not in clip_id:
            k = int(clip_id.split("_")[-2])
            depth = np.stack([scene.depth(i) for i in frames[k:k + 2]])
            medians[answer].append(np.median(depth[depth > 0]))
    assert medians["near"] and medians["far"] and max(medians["near"]) < min(medians["far"])
    depth = torch.zeros(4, 6)
    depth[:, 3:] = 2.0  # right half 2 m, left half a hole
    image = depth_image(depth.numpy(), 6)
    assert image.shape == (6, 6, 3) and (image == 128).all()  # holes take the nearest valid depth: 2 m / 4 m


def test_toy_task_has_held_out_questions_of_both_kinds(toy):
    task = toy["task"]
    assert task["train"] > 0 and task["eval"] > 0 and task["train"] % len(QUESTIONS) == 0 == task["eval"] % len(QUESTIONS)
    assert 0.5 <= task["eval_majority"] < 1.0  # both answers occur among the held-out questions


def test_gated_model_fits(gated):
    assert gated["last_loss"] < 0.1 * gated["first_loss"]


def test_gated_model_beats_the_majority_answer(toy, gated_scores):
    assert gated_scores["eval_accuracy"] > toy["task"]["eval_majority"] + 0.1
    assert gated_scores["eval_questions"] == toy["task"]["eval"]


def test_baseline_fits(baseline):
    assert baseline["last_loss"] < 0.1 * baseline["first_loss"]


def test_gated_model_learns_geometry_the_baseline_cannot_see(gated_scores, baseline_scores):
    assert gated_scores["eval_accuracy"] > baseline_scores["eval_accuracy"] + 0.1
