"""LIBERO HDF5 demos, the training samples (OFT's chunking and normalisation), train-policy and its resume."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from vega3d.cli import main
from vega3d.policies import Normalizer, PolicySettings, from_pretrained
from vega3d.policies.demos import Demo, demo_statistics, language_of, read_demos, write_demos
from vega3d.policies.train import DemoDataset, parse_policy_config, train_policy


def _demos(n=2, steps=10, seed=0):
    rng = np.random.default_rng(seed)
    return [Demo("toy", "Lift the cube", np.c_[rng.uniform(-1, 1, (steps, 6)), np.where(rng.random((steps, 1)) < 0.5, -1.0, 1.0)],
                 rng.normal(size=(steps, 8)).astype(np.float32),
                 [rng.integers(0, 256, (steps, 24, 24, 3), dtype=np.uint8) for _ in range(2)]) for _ in range(n)]


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    return write_demos(tmp_path_factory.mktemp("demos") / "KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5", _demos())


def test_demo_round_trip_and_language(demo_file):
    demos = read_demos(demo_file)
    assert len(demos) == 2 and demos[0].language == "Lift the cube"
    np.testing.assert_array_equal(demos[1].images[1], _demos()[1].images[1])
    with h5py.File(demo_file, "r") as handle:
        assert language_of(demo_file, {}) == "turn on the stove"
        assert handle["data/demo_0/obs/ee_states"].shape == (10, 6)


def test_demo_file_without_expected_keys(tmp_path):
    path = tmp_path / "bad.hdf5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("data/demo_0/actions", data=np.zeros((3, 7)))
    with pytest.raises(ValueError, match=r"bad\.hdf5: data/demo_0 lacks \['obs/agentview_rgb'"):
        read_demos(path)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("observations", data=np.zeros(3))
    with pytest.raises(ValueError, match="no 'data' group"):
        read_demos(path)


def test_samples_follow_oft_chunking(demo_file):
    demos = read_demos(demo_file)
    stats = demo_statistics(demos)
    normalizer = Normalizer(stats)
    policy = PolicySettings(num_actions_chunk=4)
    dataset = DemoDataset(demos, normalizer, policy, 28, image_aug=False)
    assert len(dataset) == 2 * (10 - 4 + 1)  # start indices up to T - K: no padding
    sample = dataset[3]  # demo 0, t = 3
    raw = demos[0].actions[3:7]
    np.testing.assert_allclose(sample["actions"][:, 6], (raw[:, 6] < 0).astype(np.float32))  # 1 = open
    np.testing.assert_allclose(sample["actions"][:, :6], normalizer.normalize_actions(demos[0].training_actions[3:7])[:, :6])
    assert sample["images"][0].shape == (28, 28, 3) and sample["proprio"].shape == (8,)


def test_config_errors(tmp_path, demo_file):
    with pytest.raises(ValueError, match="exactly one of 'base'"):
        parse_policy_config({"model": {}, "data": {"demos": [str(demo_file)]}})
    with pytest.raises(FileNotFoundError, match="matches no file"):
        parse_policy_config({"model": {"tiny": {}}, "data": {"demos": [str(tmp_path / "*.hdf5")]}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['frames'\]"):
        parse_policy_config({"model": {"tiny": {}}, "data": {"demos": [str(demo_file)], "frames": 3}})


def test_train_policy_cli_resumes_and_loads(tmp_path, demo_file):
    config = {"model": {"tiny": {}, "lora": {"rank": 4}, "generative": {"backbone": "pixels", "feature_dim": 3},
                        "policy": {"generative_history": 2}},
              "data": {"demos": [str(demo_file)], "image_aug": True, "dataset_key": "toy"},
              "training": {"output_dir": str(tmp_path / "run"), "max_steps": 2, "per_device_train_batch_size": 4,
                           "save_steps": 2, "logging_steps": 1, "use_cpu": True, "disable_tqdm": True}}
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["train-policy", str(tmp_path / "run.json")]) == 0
    config["training"]["max_steps"] = 3
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert main(["train-policy", str(tmp_path / "run.json")]) == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 3 and len(summary["losses"]) == 3 and summary["initial_weights"] == "tiny, RANDOM"
    policy = from_pretrained(tmp_path / "run")
    assert policy.generative.backbone == "pixels" and policy.policy.generative_history == 2
    assert "toy" in json.loads((tmp_path / "run" / "dataset_statistics.json").read_text())
    assert (tmp_path / "run" / "lora_adapter" / "adapter_model.safetensors").is_file()


def test_training_lowers_the_loss(tmp_path, demo_file):
    config = parse_policy_config({"model": {"tiny": {}, "lora": None}, "data": {"demos": [str(demo_file)], "image_aug": False},
                                  "training": {"output_dir": str(tmp_path / "run"), "max_steps": 6, "learning_rate": 2e-3,
                                               "per_device_train_batch_size": 8, "logging_steps": 1, "save_strategy": "no",
                                               "use_cpu": True, "disable_tqdm": True}})
    losses = json.loads((train_policy(config) / "train_summary.json").read_text())["losses"]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2])


def test_generative_features_through_the_feature_store(tmp_path, demo_file):
    from vega3d.models import GenerativeSettings
    from vega3d.models.generative import GenerativeSource

    demos = read_demos(demo_file)
    normalizer, policy = Normalizer(demo_statistics(demos)), PolicySettings(num_actions_chunk=4, generative_history=2)
    settings = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [4, 4]})
    online = DemoDataset(demos, normalizer, policy, 28, GenerativeSource(settings, "online", tmp_path / "store"), image_aug=False)
    tokens = online[8]["generative_tokens"]  # demo 1, t = 1: frames (0, 1)
    assert tokens.shape == (1, 2, 4, 4, 3) and len(list((tmp_path / "store").rglob("*.safetensors"))) == 1
    offline = DemoDataset(demos, normalizer, policy, 28, GenerativeSource(settings, "offline", tmp_path / "store"), image_aug=False)
    torch.testing.assert_close(offline[8]["generative_tokens"], tokens)
    with pytest.raises(ValueError, match="no stored generative features"):
        DemoDataset(demos, normalizer, policy, 28, GenerativeSource(settings, "offline", tmp_path / "empty"), image_aug=False)[0]
