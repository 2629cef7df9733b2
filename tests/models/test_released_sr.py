"""The released spatial-reasoning checkpoint: conversion, direct loading, the reference branch by hand, its DiT."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

from vega3d.cli import main
from vega3d.models import load_model
from vega3d.models.qwen_vega import Vega3DQwen2_5_VLForConditionalGeneration
from vega3d.models.released_sr import DIT_FILE, DIT_PREFIX
from vega3d.models.tiny import save_tiny_released, tiny_processor

# A valid tiny Wan geometry (2 heads of 12 channels) in the original naming; 2 blocks.
DIT = dict(dim=24, ffn_dim=32, num_layers=2, text_dim=16, freq_dim=16, in_channels=16)
DIFFUSERS_DIT = dict(num_attention_heads=2, attention_head_dim=12, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
                     rope_max_seq_len=64)
HIDDEN = 32  # merger hidden width (4096 released)


@pytest.fixture(scope="module")
def processor():
    return tiny_processor(image_size=56)


@pytest.fixture(scope="module")
def released(processor, tmp_path_factory):
    return save_tiny_released(tmp_path_factory.mktemp("VEGA-3D-Spatial-Reasoning"), processor, DIT, hidden=HIDDEN)


@pytest.fixture(scope="module")
def converted(released, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "ours"
    assert main(["convert", str(released), str(out), "--backbone-weights", str(out.parent / "Wan2.1-T2V-1.3B")]) == 0
    return out


def test_conversion_maps_every_key_and_writes_the_dit_beside_the_model(released, converted):
    source = load_file(str(released / "model.safetensors"))
    ours = load_file(str(converted / "model.safetensors"))
    torch.testing.assert_close(ours["model.fusion.gate.weight"], source["generative_fusion.gate_projection.0.weight"])
    torch.testing.assert_close(ours["model.fusion.norm_sem.bias"], source["generative_fusion.norm1.bias"])
    torch.testing.assert_close(ours["model.generative_projector.ln_q.weight"], source["generative_merger.ln_q.weight"])
    torch.testing.assert_close(ours["model.language_model.layers.0.mlp.up_proj.weight"], source["model.layers.0.mlp.up_proj.weight"])
    torch.testing.assert_close(ours["model.visual.merger.mlp.0.weight"], source["visual.merger.mlp.0.weight"])
    assert not any(k.startswith("generative_") for k in ours)
    dit = load_file(str(converted / DIT_FILE))
    assert len(dit) == 15 + 27 * DIT["num_layers"]
    torch.testing.assert_close(dit["blocks.1.attn2.to_q.weight"], source[DIT_PREFIX + "blocks.1.cross_attn.q.weight"])
    torch.testing.assert_close(dit["condition_embedder.text_embedder.linear_1.weight"], source[DIT_PREFIX + "text_embedding.0.weight"])
    torch.testing.assert_close(dit["blocks.0.scale_shift_table"], source[DIT_PREFIX + "blocks.0.modulation"])
    settings = json.loads((converted / "config.json").read_text())["vega3d"]
    assert settings["backbone"] == "wan2.1-t2v-1.3b" and settings["feature_dim"] == DIT["dim"]
    assert settings["backbone_options"] == {"preset": "reference", "size": [480, 832], "grid": [30, 52], "block": 1,
                                            "timestep": 300, "frame_mode": "per_frame", "dit_weights": DIT_FILE}
    assert (settings["fusion"], settings["fusion_options"]) == ("gated", {"preset": "residual"})
    assert (settings["projector"], settings["resample"], settings["visual_input"]) == ("merger", "bilinear", "images")
    assert settings["backbone_weights"] == str((converted.parent / "Wan2.1-T2V-1.3B").resolve())  # the released
    assert json.loads((released / "config.json").read_text())["generative_encoder_path"] == "data/models/Wan2.1-T2V-1.3B"


def test_direct_load_equals_the_converted_checkpoint(released, converted):
    direct, ours = load_model(str(released)), load_model(str(converted))
    assert isinstance(direct, Vega3DQwen2_5_VLForConditionalGeneration)
    mine, theirs = direct.state_dict(), ours.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        torch.testing.assert_close(mine[key], theirs[key], rtol=0, atol=0, msg=key)
    assert float(direct.model.fusion.residual_scale.detach()) == pytest.approx(0.2)
    # dit_weights: the released folder itself (direct) or the converted file, resolved to the checkpoint
    assert direct.generative.backbone_options["dit_weights"] == str(released.resolve())
    assert ours.generative.backbone_options["dit_weights"] == str((converted / DIT_FILE).resolve())


def test_reference_branch_by_hand(processor, converted):
    """Image tokens: bilinear resize to the unmerged grid, RMSNorm + 2x2 window in Qwen's order, MLP, the
    residual token gate on the raw streams; text tokens untouched (REFERENCE-SR section 3, steps 10-12)."""
    model = load_model(str(converted))
    frames = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    images = processor.images(frames)
    assert images["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]
    gen = torch.randn(2, 3, 5, DIT["dim"], generator=torch.Generator().manual_seed(1))  # a 3x5 backbone grid
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "q"}]}]
    batch = processor.prompt(messages, images)
    captured = {}
    hook = model.model.language_model.register_forward_pre_hook(lambda m, a, k: captured.update(k), with_kwargs=True)
    with torch.no_grad():
        model(**batch, generative_tokens=[gen])
        plain = Qwen2_5_VLModel.get_image_features(model.model, images["pixel_values"], images["image_grid_thw"])
        sem = torch.cat(plain.pooler_output)
    hook.remove()
    up = F.interpolate(gen.permute(0, 3, 1, 2), size=(4, 4), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    windows = [up[:, 0::2, 0::2], up[:, 0::2, 1::2], up[:, 1::2, 0::2], up[:, 1::2, 1::2]]  # (0,0) (0,1) (1,0) (1,1)
    norm = lambda x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)  # noqa: E731  (weight = 1)
    merged = torch.cat([norm(w) for w in windows], dim=-1).reshape(8, 4 * DIT["dim"])
    projector = model.model.generative_projector.mlp
    projected = projector[2](F.gelu(projector[0](merged)))
    fusion = model.model.fusion
    gate = torch.sigmoid(fusion.gate(torch.cat([fusion.norm_sem(sem), fusion.norm_gen(projected)], -1)))
    expected = sem + 0.2 * (gate * sem + (1 - gate) * projected - sem)
    is_image = batch["input_ids"][0] == processor.image_token_id
    assert int(is_image.sum()) == 8
    torch.testing.assert_close(captured["inputs_embeds"][0, is_image], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(captured["inputs_embeds"][0, ~is_image], model.get_input_embeddings()(batch["input_ids"][0, ~is_image]))
    with pytest.raises(ValueError, match="fuses images: pass generative_tokens"):
        model(**batch)


def test_backbone_takes_the_dit_from_the_checkpoint(released, converted):
    from vega3d.backbones.wan import WanBackbone
    from vega3d.backbones.wan_loading import load_transformer, resolve_weights, with_dit_weights

    random = resolve_weights("wan2.1-t2v-1.3b", "random", transformer_config=DIFFUSERS_DIT)
    load = lambda dit: load_transformer(with_dit_weights(random, dit) if dit else random, False, 1, torch.float32).state_dict()  # noqa: E731
    pristine, from_file = load(None), load(str(converted / DIT_FILE))
    backbone = WanBackbone(weights="random", transformer_config=DIFFUSERS_DIT, vae_config=dict(base_dim=8, num_res_blocks=1),
                           block=1, dit_weights=str(released))
    direct = backbone.transformer.state_dict()
    source = load_file(str(released / "model.safetensors"))
    torch.testing.assert_close(direct["blocks.0.attn1.to_k.weight"], source[DIT_PREFIX + "blocks.0.self_attn.k.weight"])
    assert not torch.equal(direct["blocks.0.attn1.to_k.weight"], pristine["blocks.0.attn1.to_k.weight"])
    for key in direct:
        torch.testing.assert_close(direct[key], from_file[key], rtol=0, atol=0, msg=key)
    assert backbone.config()["dit_weights"] == str(released)
    assert backbone.config()["weights"].startswith("RANDOM WEIGHTS") and "DiT from" in backbone.config()["weights"]
    with pytest.raises(ValueError, match="holds no Wan DiT"):
        with_dit_weights(random, str(converted / "model.safetensors"))


def test_released_checkpoint_without_dit_keys_is_refused(processor, released, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "no-dit"
    folder.mkdir()
    state = {k: v for k, v in load_file(str(released / "model.safetensors")).items() if not k.startswith(DIT_PREFIX)}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text((released / "config.json").read_text())
    with pytest.raises(ValueError, match="re-initialised, which only the checkpoint holds"):
        load_model(str(folder))


def test_inspect_reads_a_converted_checkpoint_and_its_dit(converted, tmp_path, capsys):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    WanTransformer3DModel(**DIFFUSERS_DIT).save_pretrained(tmp_path / "wan" / "transformer")
    assert main(["inspect", str(converted), "--compare-wan", str(tmp_path / "wan")]) == 0
    out = capsys.readouterr().out
    assert '"visual_input": "images"' in out  # the converted config's settings
    equal, total = (int(x) for x in re.match(r"(\d+) of (\d+) groups", out.splitlines()[-1]).groups())
    assert 1 <= equal < total  # norms (all ones in both toys) equal, the random Linear weights not
    assert main(["inspect", str(tmp_path / "missing")]) == 1
