"""The instruction-aware gate inside the tiny Qwen2.5-VL: the question reaches the video tokens' gate."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

from vega3d.fusion import InstructionVocabulary, build_instruction_context
from vega3d.fusion.instruction import IMAGE_TOKEN_INDEX
from vega3d.models import GenerativeSettings
from vega3d.models.tiny import build_tiny_model, tiny_processor

SETTINGS = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [7, 7]},
                              fusion="instruction_token_gated")


def conversation(question, answer=None):
    turns = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    return turns + ([{"role": "assistant", "content": answer}] if answer else [])


@pytest.fixture(scope="module")
def setup():
    processor = tiny_processor(image_size=56)
    model = build_tiny_model(processor, SETTINGS, seed=0).eval()
    with torch.no_grad():  # a context MLP that clearly moves the gate
        model.model.fusion.ctx_projection[2].weight.mul_(50.0)
    # the tiny tokenizer is byte-level: the template drops the bytes of "Is it" except the relation bytes of "left"
    model.model.instruction_vocabulary = InstructionVocabulary.from_tokenizer(
        processor.tokenizer, template_phrases=["Is it"], relation_phrases=["left"], leading_space=False)
    generator = torch.Generator().manual_seed(0)
    frames, gen = torch.rand(4, 3, 56, 56, generator=generator), torch.rand(4, 7, 7, 3, generator=generator)
    return processor, model, processor.video(frames), gen


def contexts_used(model, batch, gen, call="forward"):
    """The ``context`` each video was fused with when ``model(**batch)`` / ``model.generate(**batch)`` ran."""
    with mock.patch.object(model.model, "fuse_visual_tokens", wraps=model.model.fuse_visual_tokens) as fuse, torch.no_grad():
        if call == "forward":
            model(**batch, generative_tokens=[gen])
        else:
            model.generate(**batch, generative_tokens=[gen], max_new_tokens=1, do_sample=False)
    return [c.kwargs["context"] for c in fuse.call_args_list]


def test_training_context_is_the_prompt_and_matches_the_builder(setup):
    processor, model, video, gen = setup
    batch = processor.example(conversation("Is it left?", "yes"), video)
    ids = batch["input_ids"]
    placeholders = (ids == model.config.video_token_id) | (ids == model.config.image_token_id)
    want = build_instruction_context(ids.masked_fill(placeholders, IMAGE_TOKEN_INDEX), model.get_input_embeddings(),
                                     model.model.instruction_vocabulary, attention_mask=batch["attention_mask"],
                                     labels=batch["labels"])
    (used,) = contexts_used(model, batch, gen)
    torch.testing.assert_close(used, want[0])
    # the answer is a target, so it is not part of the context: another answer, the same context
    (other,) = contexts_used(model, processor.example(conversation("Is it left?", "no way"), video), gen)
    torch.testing.assert_close(other, used)
    with torch.no_grad():
        sem = Qwen2_5_VLModel.get_video_features(model.model, video["pixel_values_videos"], video["video_grid_thw"]).pooler_output[0]
        fused = [model.model.fuse_visual_tokens(sem, video["video_grid_thw"][0], gen, context=c) for c in (used, None)]
    assert not torch.allclose(*fused, atol=1e-4)  # the context moves the video tokens


def test_the_question_reaches_generate_and_changes_the_context(setup):
    processor, model, video, gen = setup
    left, far = (processor.prompt(conversation(q), video) for q in ("Is it left?", "Is it far?"))
    (in_generate,) = contexts_used(model, left, gen, call="generate")
    (in_forward,) = contexts_used(model, left, gen)
    torch.testing.assert_close(in_generate, in_forward)
    torch.testing.assert_close(in_forward, model.model.instruction_context(left["input_ids"], left["attention_mask"])[0])
    assert not torch.allclose(contexts_used(model, far, gen)[0], in_forward)
    with torch.no_grad():
        gates = model.video_gates(video["pixel_values_videos"], video["video_grid_thw"], [gen], in_forward[None])
    assert gates[0].shape == (2, 2, 2)
    with pytest.raises(ValueError, match="got 2 instruction context"):
        model.model.get_video_features(video["pixel_values_videos"], video["video_grid_thw"], [gen],
                                       instruction_context=torch.zeros(2, model.config.text_config.hidden_size))


def test_stacked_videos_keep_their_own_question(setup):
    """Two samples' videos are fused in one call: each keeps its own sample's instruction context."""
    processor, model, video, gen = setup
    items = [processor.example(conversation(q, "yes"), video) for q in ("Is it left?", "Is it far?")]
    length = max(len(i["input_ids"][0]) for i in items)
    pad = lambda key, value: torch.cat([F.pad(i[key], (0, length - i[key].shape[1]), value=value) for i in items])
    batch = {"input_ids": pad("input_ids", processor.tokenizer.pad_token_id), "attention_mask": pad("attention_mask", 0),
             "mm_token_type_ids": pad("mm_token_type_ids", 0), "labels": pad("labels", -100),
             "pixel_values_videos": torch.cat([video["pixel_values_videos"]] * 2),
             "video_grid_thw": torch.cat([video["video_grid_thw"]] * 2)}
    with mock.patch.object(model.model, "fuse_visual_tokens", wraps=model.model.fuse_visual_tokens) as fuse, torch.no_grad():
        model(**batch, generative_tokens=[gen, gen])
    (call,) = fuse.call_args_list
    groups = int(video["video_grid_thw"][0, 0])
    contexts = [contexts_used(model, item, gen)[0] for item in items]  # each sample alone
    torch.testing.assert_close(call.kwargs["context"], torch.stack(contexts).repeat_interleave(groups, dim=0))
    assert not torch.allclose(*contexts)
