"""Object features, the InfoNCE head and the ScanRefer / Multi3DRefer rules against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from vega3d.fusion import world_position_code
from vega3d.models import grounding
from vega3d.models.grounding import (
    GroundingHead,
    infonce_loss,
    object_features,
    patch_membership,
    select_multi3drefer,
    select_scanrefer,
)


def scene(frames=2, patches=3, patch=14):
    """Every pixel at (5, 5, 5) (outside every test box) except where a test paints it."""
    return torch.full((frames, patches * patch + 6, patches * patch + 6, 3), 5.0)  # 6 extra rows/cols are cropped


def test_membership_needs_98_of_196_pixels_inside():
    world = scene()
    box = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])  # [-0.5, 0.5]^3
    world[0, :7, :14] = 0.5  # 98 pixels of patch (0, 0) of frame 0, exactly on the max face (inclusive)
    world[0, 14:21, 14:27] = 0.0  # 91 pixels of patch (1, 1)
    world[0, 21, 14] = 0.0  # 92
    world[1, 28:42, 28:42] = torch.tensor([0.0, 0.0, 0.51])  # z just outside: patch (2, 2) of frame 1 is not in
    world[1, 42:, 42:] = 0.0  # cropped pixels never count
    members = patch_membership(world, box)
    assert members.shape == (1, 2, 3, 3)
    assert members.nonzero().tolist() == [[0, 0, 0, 0]]
    world[0, 21, 15:21] = 0.0  # patch (1, 1) now has 98 inside pixels
    assert patch_membership(world, box).nonzero().tolist() == [[0, 0, 0, 0], [0, 0, 1, 1]]


def test_membership_in_small_chunks_equals_one_chunk(monkeypatch):
    world = torch.rand(3, 42, 42, 3, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.8, 0.8, 0.9], [0.3, 0.6, 0.5, 0.5, 0.9, 1.0], [0.7, 0.7, 0.7, 0.6, 0.6, 0.6]])
    whole = patch_membership(world, boxes, min_fraction=0.3)
    monkeypatch.setattr(grounding, "MEMBERSHIP_CHUNK_BYTES", 1)
    assert torch.equal(patch_membership(world, boxes, min_fraction=0.3), whole) and whole.any()


def test_object_feature_is_the_mean_of_selected_patches_over_frames_plus_centre_code():
    world, dim = scene(), 12
    world[0, :14, :14] = 0.0  # frame 0 patch 0
    world[1, 14:28, 28:42] = 0.1  # frame 1 patch (1, 2) = index 9 + 5
    patches = torch.randn(2, 9, dim, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0], [-3.0, -3.0, -3.0, 1.0, 1.0, 1.0]])
    features = object_features(patches, world, boxes)
    centre_code = world_position_code(boxes[:, :3], dim)
    torch.testing.assert_close(features[0], (patches[0, 0] + patches[1, 5]) / 2 + centre_code[0])
    torch.testing.assert_close(features[1], centre_code[1])  # no patch qualifies: zero vector + code
    with pytest.raises(ValueError, match="patch features have 18 patches over all frames; the world coordinates give 12"):
        object_features(patches, world[:, :28, :56], boxes)
    with pytest.raises(ValueError, match=r"boxes must be \[N, 6\]"):
        object_features(patches, world, boxes[:, :3])


def test_infonce_with_several_targets_and_the_zero_target():
    scores = torch.tensor([0.5, -0.2, 0.1, 0.3])  # 3 proposals, zero-target last
    e = [math.exp(s / 0.07) for s in scores.tolist()]
    assert infonce_loss(scores, [0, 2]).item() == pytest.approx(-math.log((e[0] + e[2]) / sum(e)), rel=1e-5)
    assert infonce_loss(scores, []).item() == pytest.approx(-math.log(e[3] / sum(e)), rel=1e-5)
    with pytest.raises(ValueError, match=r"object labels \[3\] are outside the 3 proposal"):
        infonce_loss(scores, [3])


def test_head_scores_are_cosines_of_the_two_mlps_with_the_zero_target_last():
    head = GroundingHead(8)
    objects, query = torch.randn(3, 8), torch.randn(8)
    scores = head.scores(objects, query)
    keys = head.object_mlp(torch.cat([objects, head.zero_target[None]]))
    want = torch.nn.functional.cosine_similarity(keys, head.query_mlp(query)[None], dim=-1)
    torch.testing.assert_close(scores, want)
    assert [type(m).__name__ for m in head.object_mlp] == ["Linear", "ReLU", "LayerNorm", "Linear"]


def test_scanrefer_takes_the_best_real_proposal():
    assert select_scanrefer(torch.tensor([0.1, 0.7, 0.3, 0.2])) == 1
    assert select_scanrefer(torch.tensor([0.1, 0.5, 0.3, 0.9])) == 1  # zero-target wins -> best real one


def test_multi3drefer_cumulative_probability_rule():
    assert select_multi3drefer(torch.tensor([0.1, 0.2, 0.9])) == []  # zero-target wins: no object
    scores = torch.tensor([0.30, 0.28, 0.25, 0.29])
    p = torch.softmax(scores / 0.07, 0).tolist()  # [0.30, 0.23, 0.15, 0.26] roughly; real mass without zero ~0.74
    chosen = select_multi3drefer(scores)
    assert chosen == [0, 1] and p[0] < 0.4 <= p[0] + p[1]
    spread = torch.tensor([0.30, 0.05, 0.04, 0.29])  # the real proposals hold ~0.55 < 0.99: all of them (fact 55)
    assert sum(torch.softmax(spread / 0.07, 0)[:3].tolist()) < 0.99 and select_multi3drefer(spread, mass=0.99) == [0, 1, 2]
