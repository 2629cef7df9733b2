"""Checkpoints of the 3D model: round trip, clear refusals, the original LLaVA-NeXT and llava-hf layouts,
and the full-size key set and shapes on the meta device."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

from llava_original import original_key, write_llava_next  # tests/models is on sys.path (no package)
from vega3d.cli import main
from vega3d.models.convert import LAYOUTS, convert_state_dict
from vega3d.models.llava_layouts import AUTHORS_3D_CONFIG, llava_next_config
from vega3d.models.llava_tiny import build_tiny_llava
from vega3d.models.llava_video import (
    Vega3DLlavaVideoConfig,
    Vega3DLlavaVideoForConditionalGeneration,
    load_llava_video,
)
from vega3d.models.settings import GenerativeSettings

GATED = GenerativeSettings(backbone="pixels", feature_dim=3, fusion="gated", fusion_options={"preset": "reference"})


@pytest.fixture(scope="module")
def vega():
    return build_tiny_llava(generative=GATED, grounding={}, seed=3)[0]


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key].to(sa[key].dtype), atol=0, rtol=0, msg=key)


def test_round_trip_records_settings_and_token_ids(vega, tmp_path):
    vega.save_pretrained(tmp_path / "ck")
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert config["model_type"] == "vega3d_llava_video" and config["vega3d"]["backbone"] == "pixels"
    assert (config["ground_token_id"], config["coord_token_id"]) == (vega.config.ground_token_id, vega.config.coord_token_id)
    loaded = load_llava_video(tmp_path / "ck")
    same_weights(vega, loaded)
    assert loaded.generative.to_dict() == GATED.to_dict() and loaded.config.grounding == {}
    from transformers import AutoConfig, AutoModel

    assert isinstance(AutoConfig.from_pretrained(tmp_path / "ck"), Vega3DLlavaVideoConfig)
    assert type(AutoModel.from_pretrained(tmp_path / "ck")) is Vega3DLlavaVideoForConditionalGeneration


def test_missing_adapters_and_plain_checkpoints_are_clear_errors(vega, tmp_path):
    vega.save_pretrained(tmp_path / "ck")
    state = load_file(str(tmp_path / "ck" / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("model.fusion.")}, str(tmp_path / "ck" / "model.safetensors"))
    with pytest.raises(ValueError, match="the config has generative settings but the weights lack them"):
        load_llava_video(tmp_path / "ck")
    plain = build_tiny_llava(seed=3)[0]
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="has no generative branch.*generative=GenerativeSettings"):
        Vega3DLlavaVideoForConditionalGeneration.from_pretrained(tmp_path / "plain", expect_generative=True)
    attached = load_llava_video(tmp_path / "plain", generative=GATED, grounding={})
    assert attached.generative is not None and hasattr(attached, "grounding_head")
    fresh = build_tiny_llava(generative=GATED, grounding={}, seed=3)[0]  # same seeds: the same new adapters
    torch.testing.assert_close(attached.model.fusion.gate.weight, fresh.model.fusion.gate.weight)
    torch.testing.assert_close(attached.grounding_head.zero_target, fresh.grounding_head.zero_target)
    with pytest.raises(ValueError, match="already has a generative branch"):
        load_llava_video(tmp_path / "ck", generative=GATED)


def test_original_llava_next_layout_loads_and_converts(vega, tmp_path):
    extra = {"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(4)}  # saved by old LLaVA-NeXT, recomputed here
    source = write_llava_next(vega, tmp_path / "authors", tmp_path / "siglip", extra)
    loaded = load_llava_video(source)
    same_weights(vega, loaded)
    assert loaded.config.vision_config.num_hidden_layers == 1  # the named SigLIP has 2 layers; LLaVA-NeXT drops one
    assert loaded.generative.backbone == "wan2.1-t2v-1.3b" and loaded.generative.fusion_options == {"preset": "reference"}
    assert loaded.config.ground_token_id == vega.config.ground_token_id
    assert main(["convert", str(source), str(tmp_path / "ours")]) == 0
    same_weights(vega, Vega3DLlavaVideoForConditionalGeneration.from_pretrained(tmp_path / "ours"))
    pixels, world = torch.rand(2, 3, 56, 56), torch.rand(2, 56, 56, 3)
    with torch.no_grad():
        a = vega.model.visual_tokens(vega.model.encode_frames(pixels), world, torch.rand(2, 4, 4, 3, generator=torch.Generator().manual_seed(0)))
        b = loaded.model.visual_tokens(loaded.model.encode_frames(pixels), world, torch.rand(2, 4, 4, 3, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(a, b)


def test_unknown_keys_and_unsupported_configs_are_refused(vega, tmp_path):
    source = write_llava_next(vega, tmp_path / "authors", tmp_path / "siglip", {"model.mystery.weight": torch.ones(1)})
    with pytest.raises(ValueError, match="'model.mystery.weight' is not part of the 'llava-next' layout"):
        load_llava_video(source)
    config = json.loads((source / "config.json").read_text())
    with pytest.raises(ValueError, match="mm_newline_position='frame' is not supported"):
        llava_next_config({**config, "mm_newline_position": "frame"})
    with pytest.raises(ValueError, match="feature_fusion_method 'cross_attention' has no weight mapping"):
        llava_next_config({**config, "feature_fusion_method": "cross_attention"})


def test_llava_hf_checkpoint_loads_as_the_baseline(tmp_path):
    ours = build_tiny_llava(seed=4)[0]
    config = LlavaOnevisionConfig(text_config=ours.config.text_config.to_dict(), vision_config=ours.config.vision_config.to_dict())
    hf = LlavaOnevisionForConditionalGeneration(config)
    hf.load_state_dict(ours.state_dict(), strict=False)
    hf.save_pretrained(tmp_path / "hf")  # transformers writes llava-hf names (language_model.model.*)
    assert any(k.startswith("language_model.model.") for k in load_file(str(tmp_path / "hf" / "model.safetensors")))
    loaded = load_llava_video(tmp_path / "hf")
    assert loaded.generative is None and loaded.config.grounding is None
    hf_state = hf.state_dict()
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, hf_state[key], msg=key)


def released_keys(layers=28, vision_layers=26, c=3584, vocab=151649, siglip=1152, ffn=18944, kv=512):
    """The authors' VEGA-3D checkpoint as facts 15-16 describe it: LLaVA-NeXT names and shapes."""
    keys = {"model.embed_tokens.weight": (vocab, c), "model.norm.weight": (c,), "lm_head.weight": (vocab, c),
            "model.image_newline": (c,), "model.mm_projector.0.weight": (c, siglip), "model.mm_projector.0.bias": (c,),
            "model.mm_projector.2.weight": (c, c), "model.mm_projector.2.bias": (c,),
            "model.generative_projector.0.weight": (c, 1536), "model.generative_projector.0.bias": (c,),
            "model.generative_projector.2.weight": (c, c), "model.generative_projector.2.bias": (c,),
            "model.feature_fusion.gate_projection.0.weight": (1, 2 * c), "model.feature_fusion.gate_projection.0.bias": (1,),
            "ground_head_zero_target": (c,)}
    for norm in ("norm1", "norm2"):
        keys.update({f"model.feature_fusion.{norm}.weight": (c,), f"model.feature_fusion.{norm}.bias": (c,)})
    for head in ("ground_head_obj", "ground_head_query"):
        for i in (0, 3):
            keys.update({f"{head}.{i}.weight": (c, c), f"{head}.{i}.bias": (c,)})
        keys.update({f"{head}.2.weight": (c,), f"{head}.2.bias": (c,)})
    for i in range(layers):
        p = f"model.layers.{i}."
        keys.update({p + "self_attn.q_proj.weight": (c, c), p + "self_attn.q_proj.bias": (c,),
                     p + "self_attn.k_proj.weight": (kv, c), p + "self_attn.k_proj.bias": (kv,),
                     p + "self_attn.v_proj.weight": (kv, c), p + "self_attn.v_proj.bias": (kv,),
                     p + "self_attn.o_proj.weight": (c, c), p + "mlp.gate_proj.weight": (ffn, c),
                     p + "mlp.up_proj.weight": (ffn, c), p + "mlp.down_proj.weight": (c, ffn),
                     p + "input_layernorm.weight": (c,), p + "post_attention_layernorm.weight": (c,)})
    v = "model.vision_tower.vision_tower.vision_model."
    keys.update({v + "embeddings.patch_embedding.weight": (siglip, 3, 14, 14), v + "embeddings.patch_embedding.bias": (siglip,),
                 v + "embeddings.position_embedding.weight": (729, siglip), v + "post_layernorm.weight": (siglip,),
                 v + "post_layernorm.bias": (siglip,)})
    for i in range(vision_layers):
        p = f"{v}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            keys.update({p + f"self_attn.{proj}.weight": (siglip, siglip), p + f"self_attn.{proj}.bias": (siglip,)})
        keys.update({p + "mlp.fc1.weight": (4304, siglip), p + "mlp.fc1.bias": (4304,), p + "mlp.fc2.weight": (siglip, 4304),
                     p + "mlp.fc2.bias": (siglip,)})
        for norm in ("layer_norm1", "layer_norm2"):
            keys.update({p + f"{norm}.weight": (siglip,), p + f"{norm}.bias": (siglip,)})
    return keys


def test_full_size_key_set_and_shapes_on_the_meta_device():
    config = Vega3DLlavaVideoConfig(**{k: v for k, v in llava_next_config(AUTHORS_3D_CONFIG).items() if k != "model_type"})
    with torch.device("meta"):
        model = Vega3DLlavaVideoForConditionalGeneration(config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {LAYOUTS["llava-next"].rename(k): shape for k, shape in released_keys().items()}
    assert ours == expected
    assert original_key("model.fusion.gate.weight") == "model.feature_fusion.gate_projection.0.weight"
    assert convert_state_dict({"model.vision_tower.vision_tower.vision_model.head.probe": torch.ones(1)}, LAYOUTS["llava-next"]) == {}
