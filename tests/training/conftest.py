"""The prepared procedural room, a tiny RANDOM-WEIGHT 3D model and a short 1-process training run of it,
shared by the 3D training and chain tests (built once per session)."""

from __future__ import annotations

import pytest
import yaml

from room3d import IMAGE_SIZE, prepare_room, save_tiny_3d


@pytest.fixture(scope="session")
def room3d(tmp_path_factory):
    return prepare_room(tmp_path_factory.mktemp("room3d"))


@pytest.fixture(scope="session")
def tiny3d(tmp_path_factory):
    return save_tiny_3d(tmp_path_factory.mktemp("tiny3d"))


def config_3d(room, model, out, **training) -> dict:
    return {"model": str(model),
            "data": {"train": str(room["processed"] / "multi.yaml"), "scenes": str(room["scenes"]),
                     "boxes": str(room["metadata"] / "scannet_train_gt_box.json"), "num_frames": 4,
                     "image_size": [IMAGE_SIZE, IMAGE_SIZE]},
            "training": {"output_dir": str(out), "max_steps": 4, "per_device_train_batch_size": 2, "logging_steps": 1,
                         "lr_llm": 1e-3, "lr_vision": 1e-4, "warmup_steps": 0, "save_strategy": "no", "use_cpu": True,
                         **training}}


@pytest.fixture(scope="session")
def trained3d(tmp_path_factory, room3d, tiny3d):
    """4 steps of 2 samples on one process: the reference for the 2-process run and the model of the chain."""
    from vega3d.cli import main

    folder = tmp_path_factory.mktemp("trained3d")
    (folder / "train.yaml").write_text(yaml.safe_dump(config_3d(room3d, tiny3d, folder / "run")))
    assert main(["train", str(folder / "train.yaml")]) == 0
    return folder / "run"
