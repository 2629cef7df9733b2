"""The toy grounding task, small enough for CI; the full run is benchmarks/toy_grounding.py (docs/model3d.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vega3d.scenes.synthetic import ROOM, camera_path
from vega3d.training.toy_grounding import EXPRESSIONS, build_toy_grounding, train_and_score


@pytest.fixture(scope="module")
def task():
    return build_toy_grounding(num_views=8, boxes_per_view=1, block=1)


def test_answers_are_the_geometry_of_the_boxes(task):
    door = np.array([6.0, 2.5, 1.0])
    texts = {text: kind for kind, (text, _) in EXPRESSIONS.items()}
    for sample in task["train"] + task["eval"]:
        boxes = sample["boxes"].double().numpy()
        centre = boxes[:, :3]
        want = {"door_nearest": np.argmin(np.sqrt(((centre - door) ** 2).sum(1))),
                "door_farthest": np.argmax(np.sqrt(((centre - door) ** 2).sum(1))), "highest": np.argmax(centre[:, 2]),
                "lowest": np.argmin(centre[:, 2])}[texts[sample["text"]]]
        assert sample["target"] == want and sample["id"].split("|")[1] == str(want)
        assert (boxes[:, :3] - boxes[:, 3:] / 2 >= ROOM[0] - 1e-9).all() and (boxes[:, :3] + boxes[:, 3:] / 2 <= ROOM[1] + 1e-9).all()
    views = {s["id"].split("_")[1] for s in task["eval"]}
    assert views == {"view03", "view07"} and not views & {s["id"].split("_")[1] for s in task["train"]}  # block 1: every 4th view
    sample = task["train"][0]
    assert sample["pixels"].shape == (1, 3, 56, 56) and sample["pixels"].min() >= -1 and sample["generative"].shape == (1, 2, 2, 3)
    eye = camera_path(8)[0][:3, 3]  # world coordinates of view 0: its centre pixel's ray starts at the camera
    assert np.linalg.norm(sample["world"][0, 28, 28].numpy() - eye) > 0.5


def test_short_training_lowers_the_loss_and_scores_through_scanrefer(task):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_and_score(task, generative=True, steps=10, batch_size=4, learning_rate=1e-2)
    finally:
        torch.set_num_threads(threads)
    assert result["last_loss"] < result["first_loss"]
    assert result["eval_samples"] == len(task["eval"]) == 8
    assert result["Acc@0.25"] == result["Acc@0.5"] and result["Acc@0.25"] % 12.5 == 0  # exact boxes: IoU is 1 or 0
    assert "RANDOM WEIGHTS" in result["model"]
