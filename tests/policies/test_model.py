"""The OpenVLA-OFT model: full-size geometry on the meta device, the fused backbone, OFT's parallel decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vega3d.policies import PrismaticImageProcessor
from vega3d.policies.tiny import tiny_inputs


def test_full_size_geometry_on_meta_device(full_size):
    model = full_size
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["projector.fc1.weight"] == (8704, 2176) and shapes["projector.fc2.weight"] == (4096, 8704)
    assert shapes["projector.fc3.weight"] == (4096, 4096)
    assert shapes["language_model.model.embed_tokens.weight"] == (32064, 4096)
    assert shapes["language_model.lm_head.weight"] == (32064, 4096)
    assert "language_model.model.layers.31.mlp.down_proj.weight" in shapes and "language_model.model.layers.32.mlp.down_proj.weight" not in shapes
    assert shapes["vision_backbone.featurizer.blocks.23.ls1.scale_factor"] == (1024,)
    assert shapes["vision_backbone.featurizer.reg_token"] == (1, 4, 1024)
    assert shapes["vision_backbone.fused_featurizer.attn_pool.latent"] == (1, 1, 1152)
    assert shapes["action_head.model.fc1.weight"] == (4096, 7 * 4096) and shapes["action_head.model.fc2.weight"] == (7, 4096)
    assert shapes["proprio_projector.fc1.weight"] == (4096, 8)
    head = sum(p.numel() for p in model.action_head.parameters())
    assert 150e6 < head < 152e6  # "about 151M parameters" (REFERENCE-VLA F2.8)
    assert model.num_patches == 2 * 256 + 1
    patches = model.vision_backbone(torch.empty(1, 12, 224, 224, device="meta"))
    assert tuple(patches.shape) == (1, 512, 2176)


def test_patches_are_second_to_last_block_without_prefix(policy):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 56, 56)
    featurizer = policy.vision_backbone.featurizer
    x = featurizer._pos_embed(featurizer.patch_embed(images))
    for block in featurizer.blocks[:-1]:  # all but the last block, no final norm
        x = block(x)
    expected = x[:, featurizer.num_prefix_tokens:]
    pixels = torch.cat([images, torch.rand(2, 3, 56, 56)], dim=1)
    got = policy.vision_backbone(pixels)
    assert got.shape == (2, 16, 32)
    torch.testing.assert_close(got[..., :16], expected)


def test_image_processor_values_and_layout():
    processor = PrismaticImageProcessor(56)
    pixels = processor(np.full((80, 60, 3), 255, dtype=np.uint8))
    assert pixels.shape == (6, 56, 56)
    assert pixels[0, 0, 0].item() == pytest.approx((1 - 0.484375) / 0.228515625)
    assert pixels[3, 0, 0].item() == pytest.approx(1.0)  # SigLIP (1 - 0.5) / 0.5


def test_prompt_layout(config, policy):
    inputs = tiny_inputs(config, policy.num_action_tokens)
    ids = inputs.prompt_ids("Lift The Cube")
    tokenizer = inputs.tokenizer
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == 2
    assert ids[-57:-1] == [1] * 56
    space = tokenizer.convert_tokens_to_ids("▁")
    assert ids[-58] == space
    text = tokenizer.decode(ids[1:-57]).replace("▁", " ")
    assert "what action should the robot take to lift the cube?" in text.lower() and "The" not in text


def _actions(policy, batch, **changes):
    with torch.no_grad():
        return policy(**{**batch, **changes})["actions"]


def test_attention_is_bidirectional(policy, batch):
    # STOP comes after every sliced position: under causal attention it could not change any action.
    ids = batch["input_ids"].clone()
    lengths = batch["attention_mask"].sum(1)
    ids[0, lengths[0] - 1] = 7
    assert not torch.allclose(_actions(policy, batch), _actions(policy, batch, input_ids=ids))


def test_placeholder_embeddings_are_zeroed(policy, batch):
    ids = batch["input_ids"].clone()
    lengths = batch["attention_mask"].sum(1)
    ids[0, lengths[0] - 57: lengths[0] - 1] = 9
    torch.testing.assert_close(_actions(policy, batch), _actions(policy, batch, input_ids=ids))


def test_padding_does_not_change_a_sample(policy, batch):
    alone = {k: v[1:] for k, v in batch.items()}
    length = int(alone["attention_mask"].sum())
    alone = {**alone, "input_ids": alone["input_ids"][:, :length], "attention_mask": alone["attention_mask"][:, :length]}
    torch.testing.assert_close(_actions(policy, batch)[1:], _actions(policy, alone), atol=1e-5, rtol=1e-5)


def test_action_slice_matches_an_independent_computation(policy, batch):
    """OFT's slice: the hidden states at [NUM_PATCHES + NUM_PROMPT_TOKENS, +56), i.e. "▁" and placeholders 0..54."""
    with torch.no_grad():
        got = policy.action_hidden_states(batch["input_ids"][:1], batch["attention_mask"][:1], batch["pixel_values"][:1],
                                          batch["proprio"][:1])
        length = int(batch["attention_mask"][0].sum())
        ids = batch["input_ids"][:1, :length]
        embeds = policy.language_model.get_input_embeddings()(ids)
        embeds[:, length - 57: length - 1] = 0
        prefix = torch.cat([policy.projector(policy.vision_backbone(batch["pixel_values"][:1])),
                            policy.proprio_projector(batch["proprio"][:1])[:, None]], dim=1)
        sequence = torch.cat([embeds[:, :1], prefix, embeds[:, 1:]], dim=1)
        full = torch.zeros(1, 1, sequence.shape[1], sequence.shape[1])  # additive mask: nothing masked
        hidden = policy.language_model.model(inputs_embeds=sequence, attention_mask=full).last_hidden_state
    prompt_tokens = length - 1 - 57
    space_position = 1 + prefix.shape[1] + prompt_tokens - 1  # where the "▁" token sits in the sequence
    torch.testing.assert_close(got[0], hidden[0, space_position: space_position + 56])


def test_loss_is_l1_of_normalised_chunk(policy, batch):
    target = torch.full((2, 8, 7), 0.25)
    out = policy(**batch, actions=target)
    assert out["loss"].item() == pytest.approx((out["actions"] - target).abs().mean().item())
    with pytest.raises(ValueError, match="chunks of"):
        policy(**batch, actions=torch.zeros(2, 4, 7))


def test_wrong_image_count_is_refused(policy, batch):
    with pytest.raises(ValueError, match="2 image"):
        policy(**{**batch, "pixel_values": batch["pixel_values"][:, :6]})


def test_timm_import_leaves_no_torchvision_behind():
    import importlib.util
    import sys

    from vega3d.policies.timm_import import import_timm

    timm = import_timm()
    assert hasattr(timm, "create_model")
    if importlib.util.find_spec("torchvision") is None:  # the placeholders lived only during `import timm`
        assert not any(name == "torchvision" or name.startswith("torchvision.") for name in sys.modules)
