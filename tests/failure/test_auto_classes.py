"""VEGA-3D checkpoints have their own model_type: Auto classes build our class, old checkpoints still load,
and a checkpoint whose weights do not match the model is refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForImageTextToText

from vega3d.models import GenerativeSettings, Vega3DQwen2_5_VLForConditionalGeneration, load_model
from vega3d.models.tiny import build_tiny_model, save_tiny, tiny_processor

SETTINGS = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [7, 7]})


@pytest.fixture(scope="module")
def processor():
    return tiny_processor(image_size=56)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, processor):
    model = build_tiny_model(processor, SETTINGS, seed=3)
    return save_tiny(tmp_path_factory.mktemp("vega"), processor, model), model.state_dict()


def same_weights(model, state):
    got = model.state_dict()
    return got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


def test_auto_class_builds_our_model_with_its_adapters(checkpoint):
    folder, state = checkpoint
    assert json.loads((folder / "config.json").read_text())["model_type"] == "vega3d_qwen2_5_vl"
    assert type(AutoConfig.from_pretrained(folder)).__name__ == "Vega3DQwen2_5_VLConfig"
    model = AutoModelForImageTextToText.from_pretrained(folder)
    assert type(model) is Vega3DQwen2_5_VLForConditionalGeneration
    assert model.generative == SETTINGS and same_weights(model, state)


def test_without_vega3d_transformers_refuses_the_checkpoint(checkpoint, monkeypatch):
    # What a process that never imported vega3d sees: transformers' own mapping, without our registration.
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING, CONFIG_MAPPING_NAMES

    assert "vega3d_qwen2_5_vl" not in CONFIG_MAPPING_NAMES
    monkeypatch.delitem(CONFIG_MAPPING._extra_content, "vega3d_qwen2_5_vl")
    with pytest.raises(ValueError, match="vega3d_qwen2_5_vl"):
        AutoModelForImageTextToText.from_pretrained(checkpoint[0])


def test_checkpoint_written_as_qwen2_5_vl_still_loads(tmp_path, checkpoint):
    folder, state = checkpoint
    old = tmp_path / "old"
    old.mkdir()
    for path in folder.iterdir():
        (old / path.name).write_bytes(path.read_bytes())
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_5_vl"}))
    for model in (Vega3DQwen2_5_VLForConditionalGeneration.from_pretrained(old), load_model(str(old))):
        assert type(model) is Vega3DQwen2_5_VLForConditionalGeneration and same_weights(model, state)
    model.save_pretrained(tmp_path / "resaved")  # saved again: under the family's own model_type
    assert json.loads((tmp_path / "resaved" / "config.json").read_text())["model_type"] == "vega3d_qwen2_5_vl"


@pytest.mark.parametrize("prefix", ["model.layers.", "visual."])
def test_weights_missing_from_the_llm_or_vision_tower_are_an_error(tmp_path, processor, checkpoint, prefix):
    folder = save_tiny(tmp_path / "broken", processor, build_tiny_model(processor, SETTINGS, seed=3))
    tensors = load_file(folder / "model.safetensors")
    dropped = next(k for k in tensors if k.startswith(prefix))
    del tensors[dropped]
    tensors["extra.weight"] = torch.zeros(1)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"broken: the weights do not match the model: missing .*unexpected \['extra.weight'\]"):
        Vega3DQwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    with pytest.raises(ValueError, match="do not match the model"):
        AutoModelForImageTextToText.from_pretrained(folder)


def test_plain_qwen_with_missing_weights_is_an_error(tmp_path, processor):
    folder = save_tiny(tmp_path / "plain", processor, build_tiny_model(processor, seed=1))
    tensors = load_file(folder / "model.safetensors")
    del tensors[next(k for k in tensors if k.startswith("model.layers."))]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    for generative in (None, SETTINGS):
        with pytest.raises(ValueError, match="plain: the weights do not match the model: missing"):
            load_model(str(folder), generative)
