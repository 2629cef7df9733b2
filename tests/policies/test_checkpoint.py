"""Strict loading: the openvla-7b layout (sharded or not), OFT's head files, and clear errors for bad folders."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vega3d.models import GenerativeSettings
from vega3d.policies import PolicySettings, build_policy, from_pretrained, save_pretrained


def _same(a, b, batch, **kwargs):
    with torch.no_grad():
        torch.testing.assert_close(a(**batch, **kwargs)["actions"], b(**batch, **kwargs)["actions"])


def test_round_trip_sharded(tmp_path, policy, batch):
    save_pretrained(policy, tmp_path, max_shard_size="200KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not any(k.startswith(("action_head.", "proprio_projector.")) for k in index["weight_map"])
    _same(policy, from_pretrained(tmp_path), batch)


def test_round_trip_with_generative_branch(tmp_path, vega_policy, batch):
    save_pretrained(vega_policy, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "openvla" and config["vega3d"]["backbone"] == "pixels"
    loaded = from_pretrained(tmp_path)
    assert loaded.generative.to_dict() == vega_policy.generative.to_dict()
    _same(vega_policy, loaded, batch, generative_tokens=torch.rand(2, 1, 1, 8, 8, 3, generator=torch.Generator().manual_seed(0)))


def _oft_layout(tmp_path, policy):
    """An OFT checkpoint: heads as DDP .pt state dicts ("module." prefix) next to the model."""
    save_pretrained(policy, tmp_path)
    for name in ("action_head", "proprio_projector"):
        tensors = load_file(tmp_path / f"{name}.safetensors")
        torch.save({f"module.{k}": v for k, v in tensors.items()}, tmp_path / f"{name}--150000_checkpoint.pt")
        (tmp_path / f"{name}.safetensors").unlink()


def test_oft_head_files_load(tmp_path, policy, batch):
    _oft_layout(tmp_path, policy)
    _same(policy, from_pretrained(tmp_path), batch)


def test_plain_openvla_gets_fresh_heads_and_attached_branch(tmp_path, policy, batch):
    save_pretrained(policy, tmp_path)
    for name in ("action_head", "proprio_projector"):
        (tmp_path / f"{name}.safetensors").unlink()
    settings = GenerativeSettings(backbone="pixels", feature_dim=3)
    loaded = from_pretrained(tmp_path, generative=settings)
    torch.testing.assert_close(loaded.projector.fc1.weight, policy.projector.fc1.weight)
    reference = build_policy(policy.config, generative=settings)
    torch.testing.assert_close(loaded.fusion.state_dict(), reference.fusion.state_dict())


def test_unexpected_key_names_the_file(tmp_path, policy):
    save_pretrained(policy, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    save_file({**tensors, "projector.fc4.weight": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors: unexpected key.*projector\.fc4"):
        from_pretrained(tmp_path)


def test_missing_key_is_an_error(tmp_path, policy):
    save_pretrained(policy, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["projector.fc3.bias"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"lack 1 key.*projector\.fc3\.bias"):
        from_pretrained(tmp_path)


def test_mismatched_action_dim_names_the_head_file(tmp_path, config):
    save_pretrained(build_policy(config, PolicySettings(action_dim=14)), tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**json.loads((tmp_path / "config.json").read_text()), "vega3d_policy": PolicySettings().to_dict()}))
    with pytest.raises(ValueError, match=r"action_head\.safetensors: model\.fc1\.weight has shape"):
        from_pretrained(tmp_path)


def test_requested_settings_must_match_the_checkpoint(tmp_path, policy):
    save_pretrained(policy, tmp_path)
    with pytest.raises(ValueError, match="trained with"):
        from_pretrained(tmp_path, policy=PolicySettings(num_actions_chunk=4))


def test_another_layout_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match=r"config\.json: model_type is 'llama'"):
        from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_pretrained(tmp_path)


def test_no_weights_is_an_error(tmp_path, policy):
    save_pretrained(policy, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        from_pretrained(tmp_path)
