"""LoRA (OFT recipe), the merged save, and the Q99 normalisation with LIBERO's gripper convention."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vega3d.policies import Normalizer, build_policy, compute_statistics, from_pretrained, load_statistics, save_statistics
from vega3d.policies.lora import LORA_FOLDER, add_lora, lora_targets, save_policy
from vega3d.policies.normalization import gripper_for_env, libero_gripper_for_training
from vega3d.policies.tiny import tiny_inputs


def test_lora_targets_at_full_size(full_size):
    targets = lora_targets(full_size)
    # DINOv2 24 blocks x 4, SigLIP 27 x 4 + attention pool 5, projector 3, Llama 32 x 7; no lm_head, no heads.
    assert len(targets) == 24 * 4 + 27 * 4 + 5 + 3 + 32 * 7
    assert not any(t.startswith(("language_model.lm_head", "action_head", "proprio_projector")) for t in targets)


def test_lora_trains_adapters_and_heads_and_saves_merged(tmp_path, config, batch):
    policy = build_policy(config)
    wrapped = add_lora(policy)
    trainable = {n.split(".")[2] if "lora_" not in n else "lora" for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable == {"lora", "action_head", "proprio_projector"}
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name:  # gaussian init leaves B = 0; make the adapters matter
                parameter.normal_(0, 0.5, generator=torch.Generator().manual_seed(len(name)))
        expected = wrapped(**batch)["actions"]
    stats = {"toy": compute_statistics(np.random.default_rng(0).normal(size=(50, 7)), np.zeros((50, 8)), 2)}
    save_policy(wrapped, tmp_path, tiny_inputs(config, 56), stats)
    adapter = json.loads((tmp_path / LORA_FOLDER / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["init_lora_weights"]) == (32, 16, "gaussian")
    with torch.no_grad():
        torch.testing.assert_close(from_pretrained(tmp_path)(**batch)["actions"], expected, atol=1e-5, rtol=1e-4)
    assert load_statistics(tmp_path)[0] == "toy"


def test_q99_normalisation_against_hand_values():
    actions = np.stack([np.linspace(-1, 1, 101)] * 6 + [np.r_[np.zeros(50), np.ones(51)]], axis=1)
    proprio = np.full((101, 8), 3.0)
    stats = compute_statistics(actions, proprio, 1)
    assert stats["action"]["q01"][0] == pytest.approx(-0.98) and stats["action"]["q99"][0] == pytest.approx(0.98)
    assert stats["action"]["mask"] == [True] * 6 + [False]
    norm = Normalizer(stats)
    out = norm.normalize_actions([[0.49, 0, 0, 0, 0, 1.5, 1.0]])
    np.testing.assert_allclose(out[0, :6], [2 * (0.49 + 0.98) / 1.96 - 1, 0, 0, 0, 0, 1.0], atol=1e-6)
    assert out[0, 6] == 1.0  # the gripper is not normalised
    np.testing.assert_allclose(norm.normalize_proprio(np.full((1, 8), 3.0)), 0.0)  # min == max -> 0
    back = norm.unnormalize_actions(norm.normalize_actions(actions[10:90]))
    np.testing.assert_allclose(back, actions[10:90], atol=1e-6)


def test_libero_gripper_conventions():
    np.testing.assert_array_equal(libero_gripper_for_training(np.array([-1.0, 1.0, 0.2])), [1.0, 0.0, 0.8])
    np.testing.assert_array_equal(gripper_for_env(np.array([1.0, 0.0, 0.7, 0.2])), [-1.0, 1.0, -1.0, 1.0])


def test_statistics_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset_statistics.json: missing normalisation statistics"):
        load_statistics(tmp_path, "libero_spatial")
    stats = compute_statistics(np.zeros((4, 7)), np.zeros((4, 8)), 1)
    save_statistics(tmp_path, "libero_spatial_no_noops", stats)
    assert load_statistics(tmp_path, "libero_spatial")[0] == "libero_spatial_no_noops"
    with pytest.raises(ValueError, match="no statistics for 'libero_goal'.*libero_spatial_no_noops"):
        load_statistics(tmp_path, "libero_goal")
    with pytest.raises(ValueError, match="lack"):
        Normalizer({"action": {"q01": [0]}, "proprio": {}}, "x.json")
