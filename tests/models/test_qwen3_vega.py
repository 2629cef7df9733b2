"""Qwen3-VL + generative branch on a tiny random model of the real transformers classes (DeepStack included)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

from vega3d.models import GenerativeSettings, load_model
from vega3d.models.qwen3_vega import MODEL_TYPE, Vega3DQwen3VLForConditionalGeneration
from vega3d.models.tiny import build_tiny_model, save_tiny, tiny_processor

SETTINGS = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [4, 4]})
QUESTION = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Near?"}]}]


@pytest.fixture(scope="module")
def processor():
    return tiny_processor(image_size=64, patch_size=16, per_group_video=True)


@pytest.fixture(scope="module")
def model(processor):
    return build_tiny_model(processor, SETTINGS, seed=0, family="qwen3_vl").eval()


@pytest.fixture(scope="module")
def clip():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 64, 64, generator=generator), torch.rand(4, 4, 4, 3, generator=generator)


def capture(model):
    seen = {}
    hook = model.model.language_model.register_forward_pre_hook(lambda m, a, k: seen.update(k), with_kwargs=True)
    return seen, hook


def test_video_tokens_are_fused_and_deepstack_passes_through(processor, model, clip):
    frames, gen = clip
    video = processor.video(frames)
    assert video["video_grid_thw"].tolist() == [[2, 4, 4]]  # 64 px / 16-px patches; 2 temporal groups
    batch = processor.prompt(QUESTION, video)
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert text.count("<|vision_start|>") == 2 and "<0.5 seconds><|vision_start|>" in text and "<2.5 seconds>" in text
    seen, hook = capture(model)
    with torch.no_grad():
        model(**batch, generative_tokens=[gen])
        plain = Qwen3VLModel.get_video_features(model.model, video["pixel_values_videos"], video["video_grid_thw"])
    hook.remove()
    sem = plain.pooler_output[0]
    pooled = torch.stack([F.adaptive_avg_pool2d(gen[2 * g:2 * g + 2].mean(0).permute(2, 0, 1), (2, 2)) for g in range(2)])
    projected = model.model.generative_projector(pooled.permute(0, 2, 3, 1).reshape(8, 3))
    fusion = model.model.fusion
    gate = torch.sigmoid(fusion.gate(torch.cat([fusion.norm_gen(projected), fusion.norm_sem(sem)], -1)))  # paper order
    expected = gate * sem + (1 - gate) * projected
    is_video = batch["input_ids"][0] == processor.video_token_id
    torch.testing.assert_close(seen["inputs_embeds"][0, is_video], expected, atol=1e-5, rtol=1e-5)
    # DeepStack: Qwen3's own intermediate visual features are injected unchanged
    assert len(seen["deepstack_visual_embeds"]) == 1
    torch.testing.assert_close(seen["deepstack_visual_embeds"][0], torch.cat(plain.deepstack_features[0]))


IMAGES = GenerativeSettings(backbone="pixels", feature_dim=3, fusion="gated", fusion_options={"preset": "residual"},
                            projector="avg", projector_options={"hidden_dim": 8}, resample="bilinear", visual_input="images")
TWO_IMAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "q"}]}]


@pytest.fixture(scope="module")
def images_model(processor):
    return build_tiny_model(processor, IMAGES, seed=0, family="qwen3_vl").eval()


def test_frames_as_images_generate(processor, clip, images_model):
    frames, gen = clip
    batch = processor.prompt(TWO_IMAGES, processor.images(frames[:2]))
    with torch.no_grad():
        out = images_model.generate(**batch, generative_tokens=[gen[:2]], max_new_tokens=2, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 2
    video_batch = processor.prompt(QUESTION, processor.video(frames))
    with pytest.raises(ValueError, match="batch has no images, which this model's branch fuses"):
        images_model(**video_batch, generative_tokens=[gen])  # a video would pass unfused: refused


def test_images_model_round_trip(processor, clip, images_model, tmp_path):
    frames, gen = clip
    images = processor.images(frames[:2])
    batch = processor.prompt(TWO_IMAGES, images)
    with torch.no_grad():
        logits = images_model(**batch, generative_tokens=[gen[:2]]).logits
    folder = save_tiny(tmp_path / "qwen3", processor, images_model)
    assert json.loads((folder / "config.json").read_text())["model_type"] == MODEL_TYPE
    loaded = load_model(str(folder))
    assert isinstance(loaded, Vega3DQwen3VLForConditionalGeneration) and loaded.generative.visual_input == "images"
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch, generative_tokens=[gen[:2]]).logits, logits)
    gates = loaded.visual_gates(images["pixel_values"], images["image_grid_thw"], [gen[:2]])
    assert [g.shape for g in gates] == [(1, 2, 2), (1, 2, 2)]


def test_plain_qwen3_checkpoint_gets_a_new_branch(processor, clip, tmp_path):
    frames, gen = clip
    folder = save_tiny(tmp_path / "plain", processor, build_tiny_model(processor, seed=0, family="qwen3_vl"))
    assert type(load_model(str(folder))).__name__ == "Qwen3VLForConditionalGeneration"
    model = load_model(str(folder), SETTINGS)
    assert isinstance(model, Vega3DQwen3VLForConditionalGeneration) and model.config.model_type == MODEL_TYPE
    example = processor.example(QUESTION + [{"role": "assistant", "content": "yes"}], processor.video(frames))
    assert torch.isfinite(model(**example, generative_tokens=[gen]).loss)
