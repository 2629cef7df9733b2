"""Qwen2.5-VL + generative branch on a tiny random model built from the real transformers classes."""

from __future__ import annotations

import json
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

from vega3d.models import (
    GenerativeSettings,
    MissingGenerativeSettings,
    Vega3DQwen2_5_VLForConditionalGeneration,
    load_model,
    resample_to_merged_grid,
)
from vega3d.models.tiny import build_tiny_model, save_tiny, tiny_processor

SETTINGS = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [7, 7]})
QUESTION = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Is it near?"}]}]
CONVERSATION = QUESTION + [{"role": "assistant", "content": "yes"}]


@pytest.fixture(scope="module")
def processor():
    return tiny_processor(image_size=56)


@pytest.fixture(scope="module")
def model(processor):
    return build_tiny_model(processor, SETTINGS, seed=0).eval()


@pytest.fixture(scope="module")
def clip():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 56, 56, generator=generator), torch.rand(4, 7, 7, 3, generator=generator)


def qwen_video_reference(frames: torch.Tensor, mean, std, patch=14, merge=2, tps=2) -> torch.Tensor:
    """Qwen's video processor layout, written out from its view/permute (frames already at a 28-px multiple)."""
    x = ((frames * 255).round() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    if pad := -len(x) % tps:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
    t, c, h, w = len(x) // tps, 3, x.shape[-2] // patch, x.shape[-1] // patch
    x = x.reshape(t, tps, c, h // merge, merge, patch, w // merge, merge, patch)
    return x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(t * h * w, c * tps * patch * patch)


@pytest.mark.parametrize("num_frames", [4, 3])
def test_video_inputs_follow_qwen_video_layout(processor, num_frames):
    frames = torch.rand(num_frames, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    video = processor.video(frames)
    ip = processor.image_processor
    expected = qwen_video_reference(frames, ip.image_mean, ip.image_std)
    assert video["video_grid_thw"].tolist() == [[2, 4, 4]]
    torch.testing.assert_close(video["pixel_values_videos"], expected, atol=1e-5, rtol=0)


def test_still_video_equals_qwen_image_path(processor):
    frame = torch.rand(1, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    from PIL import Image

    image = Image.fromarray((frame[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
    as_image = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(processor.video(frame.expand(2, -1, -1, -1))["pixel_values_videos"], as_image)


def test_resample_to_merged_grid_by_hand():
    tokens = torch.arange(3 * 4 * 4 * 2, dtype=torch.float32).reshape(3, 4, 4, 2)
    out = resample_to_merged_grid(tokens, (2, 4, 4), merge_size=2, temporal_patch_size=2)
    assert out.shape == (2 * 2 * 2, 2)
    groups = [(tokens[0] + tokens[1]) / 2, tokens[2]]  # odd clip: the last group is the last frame alone
    expected = [groups[g][2 * r:2 * r + 2, 2 * c:2 * c + 2].mean(dim=(0, 1)) for g in range(2) for r in range(2) for c in range(2)]
    torch.testing.assert_close(out, torch.stack(expected))
    with pytest.raises(ValueError, match="frame counts differ between streams: the generative stream has 5 frame"):
        resample_to_merged_grid(torch.zeros(5, 4, 4, 2), (2, 4, 4))


def _paper_gate(fusion, sem, gen):
    logit = F.linear(torch.cat([F.layer_norm(gen, gen.shape[-1:], fusion.norm_gen.weight, fusion.norm_gen.bias),
                                F.layer_norm(sem, sem.shape[-1:], fusion.norm_sem.weight, fusion.norm_sem.bias)], -1),
                     fusion.gate.weight, fusion.gate.bias)
    return torch.sigmoid(logit)


def test_fused_tokens_replace_the_video_placeholders(processor, model, clip):
    frames, gen = clip
    video = processor.video(frames)
    batch = processor.example(CONVERSATION, video)
    captured = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True)
    try:
        with torch.no_grad():
            model(**batch, generative_tokens=[gen])
    finally:
        hook.remove()
    with torch.no_grad():
        sem = Qwen2_5_VLModel.get_video_features(model.model, video["pixel_values_videos"], video["video_grid_thw"]).pooler_output[0]
        pooled = [gen[2 * g:2 * g + 2].mean(0).permute(2, 0, 1) for g in range(2)]
        pooled = torch.stack([F.adaptive_avg_pool2d(p, (2, 2)).permute(1, 2, 0).reshape(4, 3) for p in pooled]).reshape(8, 3)
        projected = model.model.generative_projector(pooled)
        gate = _paper_gate(model.model.fusion, sem, projected)
        expected = gate * sem + (1 - gate) * projected  # paper Eq. 8
    is_video = batch["input_ids"][0] == processor.video_token_id
    assert int(is_video.sum()) == 8
    torch.testing.assert_close(captured["embeds"][0, is_video], expected, atol=1e-5, rtol=1e-5)
    text_embeds = model.get_input_embeddings()(batch["input_ids"][0, ~is_video])
    torch.testing.assert_close(captured["embeds"][0, ~is_video], text_embeds)
    gates = model.video_gates(video["pixel_values_videos"], video["video_grid_thw"], [gen])
    torch.testing.assert_close(gates[0], gate.reshape(2, 2, 2))


def test_videos_of_one_grid_are_fused_in_one_call_with_the_tokens_of_separate_calls(processor, model):
    """A batch's videos of one grid and whole temporal groups are stacked into one adapter call; an odd
    clip (its last group padded) gets its own. Each video's fused tokens and gates are those it gets alone."""
    generator = torch.Generator().manual_seed(3)
    counts = [4, 3, 4]
    videos = [processor.video(torch.rand(n, 3, 56, 56, generator=generator)) for n in counts]
    gens = [torch.rand(n, 7, 7, 3, generator=generator) for n in counts]
    pixels = torch.cat([v["pixel_values_videos"] for v in videos])
    grids = torch.cat([v["video_grid_thw"] for v in videos])
    with torch.no_grad():
        sem = Qwen2_5_VLModel.get_video_features(model.model, pixels, grids).pooler_output
        alone = [model.model.fuse_visual_tokens(s, g, x, return_gate=True) for s, g, x in zip(sem, grids, gens)]
        gates = []
        with mock.patch.object(model.model, "fuse_visual_tokens", wraps=model.model.fuse_visual_tokens) as fuse:
            fused = model.model.get_video_features(pixels, grids, generative_tokens=gens, generative_gates=gates).pooler_output
    assert fuse.call_count == 2  # videos 0 and 2 together, the 3-frame one alone
    for (tokens, gate), got, got_gate in zip(alone, fused, gates, strict=True):
        torch.testing.assert_close(got, tokens, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(got_gate, gate, atol=1e-6, rtol=1e-6)


def test_generate_uses_the_generative_stream(processor, model, clip):
    frames, gen = clip
    video = processor.video(frames)
    prompt = processor.prompt(QUESTION, video)
    with torch.no_grad():
        logits = model(**prompt, generative_tokens=[gen]).logits[0, -1]
        out = model.generate(**prompt, generative_tokens=[gen], max_new_tokens=1, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)
        other = model.generate(**prompt, generative_tokens=[gen.flip(0)], max_new_tokens=1, do_sample=False,
                               output_scores=True, return_dict_in_generate=True)
    torch.testing.assert_close(out.scores[0][0], logits, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out.scores[0][0], other.scores[0][0])
    with pytest.raises(ValueError, match="pass generative_tokens"):
        model(**prompt)
    with pytest.raises(ValueError, match="expects 3"):
        model(**prompt, generative_tokens=[torch.zeros(4, 7, 7, 5)])


def test_save_and_load_round_trip(tmp_path, processor, model, clip):
    frames, gen = clip
    save_tiny(tmp_path, processor, model)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["vega3d"]["backbone"] == "pixels" and config["vega3d"]["backbone_options"] == {"grid": [7, 7]}
    assert config["vega3d"]["fusion"] == "gated"
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    assert {"model.generative_projector.0.weight", "model.fusion.gate.weight"} <= keys
    assert len(keys) == len(model.state_dict())  # the model and its adapters, no generative-backbone weights
    loaded = Vega3DQwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path).eval()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=0, rtol=0, msg=key)
    batch = processor.example(CONVERSATION, processor.video(frames))
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch, generative_tokens=[gen]).loss, model(**batch, generative_tokens=[gen]).loss)


def test_plain_checkpoint_needs_explicit_generative_settings(tmp_path, processor):
    plain = build_tiny_model(processor, seed=3)
    save_tiny(tmp_path, processor, plain)
    with pytest.raises(MissingGenerativeSettings, match=r"config.json has no 'vega3d' section"):
        Vega3DQwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path)
    settings = GenerativeSettings(backbone="pixels", feature_dim=3, fusion_options={"preset": "residual"}, adapter_seed=5)
    attached = Vega3DQwen2_5_VLForConditionalGeneration.from_qwen(tmp_path, settings)
    torch.testing.assert_close(attached.lm_head.weight, plain.lm_head.weight)
    fresh = build_tiny_model(processor, settings, seed=3)  # a new model with the same adapter seed
    assert attached.model.fusion.residual_scale.item() == pytest.approx(0.2)
    for a, b in zip(attached.adapter_parameters(), fresh.adapter_parameters()):
        torch.testing.assert_close(a, b)


def test_bad_generative_settings():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['fusoin'\]"):
        GenerativeSettings.from_dict({"backbone": "pixels", "feature_dim": 3, "fusoin": "add"})
    with pytest.raises(ValueError, match="missing required key"):
        GenerativeSettings.from_dict({"backbone": "pixels"})


def test_load_model_keeps_a_checkpoint_branch_and_refuses_a_different_one(tmp_path, processor, model):
    save_tiny(tmp_path, processor, model)
    assert load_model(str(tmp_path)).generative == SETTINGS
    other = GenerativeSettings(backbone="position", feature_dim=16)
    with pytest.raises(ValueError, match="already has a generative branch"):
        load_model(str(tmp_path), other)


def test_sequence_concat_cannot_fill_qwen_placeholders(processor):
    with pytest.raises(ValueError, match="'sequence_concat' doubles the visual tokens"):
        build_tiny_model(processor, GenerativeSettings(backbone="pixels", feature_dim=3, fusion="sequence_concat"))


@pytest.mark.parametrize("fusion", ["gated", "add", "only_generative", "channel_concat", "channel_gated", "cross_attention"])
def test_every_token_preserving_fusion_runs_inside_qwen(processor, clip, fusion):
    frames, gen = clip
    model = build_tiny_model(processor, GenerativeSettings(backbone="pixels", feature_dim=3, fusion=fusion))
    video = processor.video(frames)
    with torch.no_grad():
        loss = model(**processor.example(CONVERSATION, video), generative_tokens=[gen]).loss
    assert torch.isfinite(loss)
    if fusion in ("gated", "channel_gated"):
        gates = model.video_gates(video["pixel_values_videos"], video["video_grid_thw"], [gen])[0]
        assert gates.shape == (2, 2, 2) and 0 <= float(gates.min()) and float(gates.max()) <= 1
    else:
        with pytest.raises(ValueError, match="computes no gate"):
            model.video_gates(video["pixel_values_videos"], video["video_grid_thw"], [gen])
