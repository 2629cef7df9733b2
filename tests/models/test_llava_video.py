"""The LLaVA-Video 3D model on tiny random models of the real classes: merge, assembly, grounding, Scan2Cap."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vega3d.fusion import world_position_code
from vega3d.fusion.position import pool_world_coordinates
from vega3d.models.llava_prompts import IGNORE_INDEX, IMAGE_PLACEHOLDER, inference_prompt, training_example
from vega3d.models.llava_tiny import build_tiny_llava
from vega3d.models.settings import GenerativeSettings

GATED = GenerativeSettings(backbone="pixels", feature_dim=3, fusion="gated", fusion_options={"preset": "reference"})
CONCAT = GenerativeSettings(backbone="pixels", feature_dim=3, fusion="sequence_concat")
V, SIZE = 3, 56  # 4x4 SigLIP patches of 14 px -> 2x2 pooled tokens per frame, 2 x 3 with newlines


@pytest.fixture(scope="module")
def vega():
    return build_tiny_llava(generative=GATED, grounding={})


def clip(seed=0, frames=V):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(frames, 3, SIZE, SIZE, generator=g), torch.rand(frames, SIZE, SIZE, 3, generator=g) * 4, \
        torch.rand(frames, 4, 4, 3, generator=g)


def test_merge_pools_fuses_adds_the_code_and_ends_every_row_with_a_newline(vega):
    model, _ = vega
    pixels, world, gen = clip()
    with torch.no_grad():
        patches = model.model.encode_frames(pixels)
        tokens = model.model.visual_tokens(patches, world, gen)
        hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-1]  # no post-LN
        projected = model.model.multi_modal_projector(hidden)
        pooled = F.interpolate(projected.reshape(V, 4, 4, -1).permute(0, 3, 1, 2), size=(2, 2), mode="bilinear")
        pooled = pooled.permute(0, 2, 3, 1).reshape(V, 4, -1)
        gen_pooled = F.adaptive_avg_pool2d(gen.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).reshape(V, 4, 3)
        fused = model.model.fusion(pooled, model.model.generative_projector(gen_pooled))
        coords = world[:, :56, :56].reshape(V, 2, 28, 2, 28, 3).mean(dim=(2, 4)).reshape(V, 4, 3)
        want = fused + world_position_code(coords, 48)
    assert tokens.shape == (V * 2 * 3, 48)  # V * rows * (columns + newline)
    grid = tokens.reshape(V, 2, 3, 48)
    assert torch.equal(grid[:, :, 2], model.model.image_newline.expand(V, 2, 48))
    torch.testing.assert_close(grid[:, :, :2].reshape(V, 4, 48), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patches, projected)


def test_full_geometry_gives_6720_tokens_for_32_frames():
    from vega3d.models.llava_video import Vega3DLlavaVideoModel

    grid = Vega3DLlavaVideoModel.grid.fget(type("M", (), {"config": type("C", (), {"vision_config": type(
        "S", (), {"image_size": 384, "patch_size": 14})})})())
    assert grid == (14, 14) and 32 * grid[0] * (grid[1] + 1) == 6720
    assert pool_world_coordinates(torch.zeros(1, 384, 384, 3), 14, grid).shape == (1, 14, 14, 3)


def test_sequence_concat_appends_the_video_of_generative_tokens_with_their_own_newlines():
    model, _ = build_tiny_llava(generative=CONCAT)
    pixels, world, gen = clip(1)
    with torch.no_grad():
        patches = model.model.encode_frames(pixels)
        tokens = model.model.visual_tokens(patches, world, gen).reshape(2, V, 2, 3, 48)
        gen_pooled = F.adaptive_avg_pool2d(gen.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1).reshape(V, 4, 3)
        code = world_position_code(pool_world_coordinates(world, 14, (2, 2)), 48).reshape(V, 4, 48)
        projected = model.model.generative_projector(gen_pooled) + code
    assert torch.equal(tokens[1, :, :, 2], model.model.image_newline.expand(V, 2, 48))
    torch.testing.assert_close(tokens[1, :, :, :2].reshape(V, 4, 48), projected)


def test_baseline_without_generative_branch_and_input_errors(vega):
    baseline, tokenizer = build_tiny_llava(grounding={})
    assert baseline.generative is None and not hasattr(baseline.model, "fusion")
    pixels, world, gen = clip()
    patches = baseline.model.encode_frames(pixels)
    assert baseline.model.visual_tokens(patches, world).shape == (V * 6, 48)
    model, _ = vega
    with pytest.raises(ValueError, match="pass generative_tokens"):
        model.model.visual_tokens(patches, world)
    with pytest.raises(ValueError, match="generative tokens have 2 frames; the video has 3"):
        model.model.visual_tokens(patches, world, gen[:2])
    with pytest.raises(ValueError, match="world coordinates have 2 frames"):
        model.model.visual_tokens(patches, world[:2], gen)


def _batch(tokenizer, texts, answers):
    pairs = [training_example(tokenizer, [{"from": "human", "value": t}, {"from": "gpt", "value": a}])
             for t, a in zip(texts, answers)]
    longest = max(len(ids) for ids, _ in pairs)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (longest - len(ids)) for ids, _ in pairs])
    labels = torch.tensor([lab + [IGNORE_INDEX] * (longest - len(lab)) for _, lab in pairs])
    return input_ids, (input_ids != pad).long(), labels, [len(ids) for ids, _ in pairs]


def test_assembly_splices_visual_tokens_with_ignored_labels_and_right_padding(vega):
    model, tokenizer = vega
    input_ids, mask, labels, lengths = _batch(tokenizer, ["<image>Where is the lamp?", "<image>Hi"], ["<ground>", "Yes."])
    clips = [clip(0), clip(1)]
    embeds, new_mask, new_labels, positions, patches, queries = model.multimodal_embeddings(
        input_ids, mask, labels, [c[0] for c in clips], [c[1] for c in clips], [c[2] for c in clips])
    visual = V * 6
    assert new_mask.sum(1).tolist() == [n - 1 + visual for n in lengths]
    for b in range(2):
        p = input_ids[b].tolist().index(IMAGE_PLACEHOLDER)
        assert (new_labels[b, p:p + visual] == IGNORE_INDEX).all()
        assert torch.equal(new_labels[b, p + visual:new_mask[b].sum()], labels[b, p + 1:lengths[b]])
        with torch.no_grad():
            want = model.model.visual_tokens(model.model.encode_frames(clips[b][0]), clips[b][1], clips[b][2])
        torch.testing.assert_close(embeds[b, p:p + visual], want)
        assert positions[b, :new_mask[b].sum()].tolist() == list(range(int(new_mask[b].sum())))
    short = int(new_mask[1].sum())
    assert (new_mask[1, short:] == 0).all() and (new_labels[1, short:] == IGNORE_INDEX).all()
    ground = tokenizer.convert_tokens_to_ids("<ground>")
    assert queries[1] is None and input_ids[0, queries[0] - visual + 1] == ground


def test_grounding_batch_of_two_equals_two_batches_of_one_and_trains_the_head_only(vega):
    model, tokenizer = vega
    input_ids, mask, labels, _ = _batch(tokenizer, ["<image>The box.", "<image>Every chair."], ["<ground>", "<ground>"])
    clips = [clip(2), clip(3)]
    boxes = [torch.tensor([[1.0, 1.0, 1.0, 2.0, 2.0, 2.0], [3.0, 3.0, 3.0, 1.0, 1.0, 1.0]]),
             torch.tensor([[2.0, 2.0, 2.0, 4.0, 4.0, 4.0]])]
    object_labels = [[0], []]
    kwargs = dict(pixel_values_videos=[c[0] for c in clips], world_coords=[c[1] for c in clips],
                  generative_tokens=[c[2] for c in clips], boxes=boxes, object_labels=object_labels)
    with torch.no_grad():
        both = model(input_ids=input_ids, attention_mask=mask, labels=labels, **kwargs)
        single = []
        for b in range(2):
            n = int(mask[b].sum())
            one = {k: v[b:b + 1] for k, v in kwargs.items()}
            single.append(model(input_ids=input_ids[b:b + 1, :n], labels=labels[b:b + 1, :n], **one))
    assert [len(s) for s in both.grounding_scores] == [3, 2]
    for b in range(2):
        torch.testing.assert_close(both.grounding_scores[b], single[b].grounding_scores[0], atol=1e-5, rtol=1e-5)
    head = model.grounding_head
    want = (head.loss(both.grounding_scores[0], [0]) + head.loss(both.grounding_scores[1], [])) / 2
    torch.testing.assert_close(both.loss, want)  # no LM loss on grounding samples (fact 24)
    torch.testing.assert_close(both.loss, (single[0].loss + single[1].loss) / 2)


def test_language_loss_on_non_grounding_samples(vega):
    model, tokenizer = vega
    input_ids, mask, labels, _ = _batch(tokenizer, ["<image>What colour?"], ["Red."])
    pixels, world, gen = clip(4)
    out = model(input_ids=input_ids, attention_mask=mask, labels=labels, pixel_values_videos=[pixels],
                world_coords=[world], generative_tokens=[gen])
    assert out.grounding_scores is None and out.loss is not None
    out.loss.backward()
    assert model.model.fusion.gate.weight.grad is not None and model.model.generative_projector[0].weight.grad is not None
    model.zero_grad()


def test_coord_token_embedding_gets_the_box_centre_code(vega):
    model, tokenizer = vega
    ids = torch.tensor([inference_prompt(tokenizer, "<image> Given an object located at <coord> , describe the object in detail.")])
    pixels, world, gen = clip(5)
    common = dict(pixel_values_videos=[pixels], world_coords=[world], generative_tokens=[gen])
    box = [1.0, 2.0, 0.5, 0.3, 0.3, 0.3]
    embeds = model.multimodal_embeddings(ids, coord_boxes=[box], **common)[0]
    coord = tokenizer.convert_tokens_to_ids("<coord>")
    place = ids[0].tolist().index(coord) + V * 6 - 1
    want = model.get_input_embeddings().weight[coord] + world_position_code(torch.tensor(box[:3]), 48)
    torch.testing.assert_close(embeds[0, place], want)
    with pytest.raises(ValueError, match="has a <coord> token but no coord box"):
        model.multimodal_embeddings(ids, coord_boxes=[None], **common)


def test_location_tokens_start_at_the_mean_embedding(vega):
    model, tokenizer = vega
    rows = model.get_input_embeddings().weight
    ground, coord = model.config.ground_token_id, model.config.coord_token_id
    assert (ground, coord) == (len(tokenizer) - 2, len(tokenizer) - 1)
    torch.testing.assert_close(rows[ground], rows[:ground].mean(0))
    torch.testing.assert_close(rows[coord], rows[:coord].mean(0))  # added second: the mean includes <ground>
    torch.testing.assert_close(model.lm_head.weight[coord], model.lm_head.weight[:coord].mean(0))


def test_generate_from_a_video_prompt(vega):
    model, tokenizer = vega
    ids = inference_prompt(tokenizer, "<image>What is here?", style="reference")
    pixels, world, gen = clip(6)
    new = model.generate(torch.tensor([ids]), pixel_values_videos=[pixels], world_coords=[world], generative_tokens=[gen],
                         max_new_tokens=3, do_sample=False)
    assert new.shape == (1, 3)


def test_bf16_coordinates_reproduce_the_released_voxelisation():
    model, _ = build_tiny_llava(coordinate_dtype="bfloat16")
    fp32, _ = build_tiny_llava()
    pixels, world, _ = clip(7)
    world = world * 3 + 5  # 5-17 m: bf16 steps of 0.06 m
    with torch.no_grad():
        patches = model.model.encode_frames(pixels)
        tokens = model.model.visual_tokens(patches, world).reshape(V, 2, 3, 48)[:, :, :2].reshape(V, 4, 48)
        pooled = F.interpolate(patches.reshape(V, 4, 4, 48).permute(0, 3, 1, 2), size=(2, 2), mode="bilinear")
        pooled = pooled.permute(0, 2, 3, 1).reshape(V, 4, 48)
        coords = pool_world_coordinates(world.bfloat16(), 14, (2, 2))
        assert coords.dtype == torch.bfloat16
        torch.testing.assert_close(tokens, pooled + world_position_code(coords, 48).float().reshape(V, 4, 48))
        assert not torch.allclose(tokens, fp32.model.visual_tokens(patches, world).reshape(V, 2, 3, 48)[:, :, :2].reshape(V, 4, 48))
    with pytest.raises(ValueError, match="coordinate_dtype must be one of float32, bfloat16"):
        build_tiny_llava(coordinate_dtype="float16")


def test_video_inputs_resize_normalise_and_take_nearest_coordinates():
    from vega3d.models.llava_video import video_inputs

    frames = torch.full((2, 3, 48, 64), 0.75)
    world = torch.arange(2 * 48 * 64 * 3, dtype=torch.float32).reshape(2, 48, 64, 3)
    pixels, coords = video_inputs(frames, world, image_size=384)
    assert pixels.shape == (2, 3, 384, 384) and coords.shape == (2, 384, 384, 3)
    torch.testing.assert_close(pixels, torch.full_like(pixels, 0.5))  # (0.75 - 0.5) / 0.5
    for i, j in [(0, 0), (100, 250), (383, 383)]:  # OpenCV INTER_NEAREST: source pixel floor(i * 48 / 384)
        assert torch.equal(coords[1, i, j], world[1, i * 48 // 384, j * 64 // 384])


def test_instruction_aware_fusion_reads_each_samples_prompt():
    from vega3d.fusion import build_instruction_context

    settings = GenerativeSettings(backbone="pixels", feature_dim=3, fusion="instruction_token_gated")
    model, tokenizer = build_tiny_llava(generative=settings)
    input_ids, mask, _, _ = _batch(tokenizer, ["<image>Which chair is left?", "<image>How far?"], ["A", "B"])
    clips = [clip(8), clip(9)]
    inputs = dict(pixel_values_videos=[c[0] for c in clips], world_coords=[c[1] for c in clips],
                  generative_tokens=[c[2] for c in clips])
    with torch.no_grad():
        embeds = model.multimodal_embeddings(input_ids, mask, **inputs)[0]
        context = build_instruction_context(input_ids, model.get_input_embeddings(), model.model.instruction_vocabulary,
                                            attention_mask=mask)
        for b in range(2):
            p = input_ids[b].tolist().index(IMAGE_PLACEHOLDER)
            patches = model.model.encode_frames(clips[b][0])
            want = model.model.visual_tokens(patches, clips[b][1], clips[b][2], context=context[b])
            torch.testing.assert_close(embeds[b, p:p + V * 6], want)
        other = model.model.visual_tokens(model.model.encode_frames(clips[0][0]), clips[0][1], clips[0][2], context=context[1])
        p = input_ids[0].tolist().index(IMAGE_PLACEHOLDER)
        assert not torch.allclose(other, embeds[0, p:p + V * 6])  # the other sample's question changes the gate
