"""The generative branch inside the policy: the shared GenerativeBranch code, every fusion, history clips, reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vega3d.fusion import list_fusions
from vega3d.models import GenerativeBranch, GenerativeSettings
from vega3d.policies import PolicySettings, build_policy
from vega3d.policies.stream import GenerativeStream

SETTINGS = GenerativeSettings(backbone="pixels", feature_dim=3)


def _gen(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_policy_uses_the_shared_branch(vega_policy, batch):
    assert isinstance(vega_policy, GenerativeBranch)
    assert {"generative_projector", "fusion"} <= {name for name, _ in vega_policy.named_children()}
    with torch.no_grad():
        a = vega_policy(**batch, generative_tokens=_gen(2, 1, 1, 8, 8, 3, seed=0))["actions"]
        b = vega_policy(**batch, generative_tokens=_gen(2, 1, 1, 8, 8, 3, seed=1))["actions"]
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="pass generative_tokens"):
        vega_policy(**batch)


def test_fusion_touches_only_the_fused_image(vega_policy, batch):
    """Third-person only: the wrist image's visual tokens are the plain projected ones."""
    with torch.no_grad():
        fused = vega_policy.visual_tokens(batch["pixel_values"], _gen(2, 1, 1, 8, 8, 3))
        plain = vega_policy.projector(vega_policy.vision_backbone(batch["pixel_values"]))
        patches = vega_policy.vision_backbone.num_patches
        torch.testing.assert_close(fused[:, patches:], plain[:, patches:])
        gen = vega_policy.generative_projector(torch.nn.functional.adaptive_avg_pool2d(
            _gen(2, 1, 1, 8, 8, 3)[:, 0, 0].permute(0, 3, 1, 2), (4, 4)).permute(0, 2, 3, 1).reshape(2, 16, 3))
        torch.testing.assert_close(fused[:, :patches], vega_policy.fusion(plain[:, :patches], gen))


def test_history_clip_is_the_mean_of_its_frames(vega_policy, batch):
    clip = _gen(2, 1, 3, 8, 8, 3)
    with torch.no_grad():
        a = vega_policy(**batch, generative_tokens=clip)["actions"]
        b = vega_policy(**batch, generative_tokens=clip.mean(dim=2, keepdim=True))["actions"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion", [name for name in list_fusions() if name != "sequence_concat"])
def test_every_fusion_runs(config, batch, fusion):
    policy = build_policy(config, generative=GenerativeSettings(backbone="pixels", feature_dim=3, fusion=fusion))
    out = policy(**batch, generative_tokens=_gen(2, 1, 1, 8, 8, 3), actions=torch.zeros(2, 8, 7))
    out["loss"].backward()
    assert policy.generative_projector[0].weight.grad is not None


def test_sequence_concat_is_refused(config):
    with pytest.raises(ValueError, match="sequence_concat"):
        build_policy(config, generative=GenerativeSettings(backbone="pixels", feature_dim=3, fusion="sequence_concat"))


def test_wrist_image_can_join_the_branch(config, batch):
    policy = build_policy(config, PolicySettings(generative_images="primary+wrist"), SETTINGS)
    assert policy(**batch, generative_tokens=_gen(2, 2, 1, 8, 8, 3))["actions"].shape == (2, 8, 7)
    with pytest.raises(ValueError, match=r"expected \[2, 2, T"):
        policy(**batch, generative_tokens=_gen(2, 1, 1, 8, 8, 3))


class CountingBackbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.frames = 0

    def forward(self, frames):
        self.frames += len(frames)
        return frames.mean(dim=(2, 3))[:, None, None, :].expand(-1, 2, 2, -1)


def test_stream_encodes_each_frame_once_and_keeps_history():
    backbone = CountingBackbone()
    stream = GenerativeStream(SETTINGS, history=3, backbone=backbone)
    images = [np.full((8, 8, 3), v, dtype=np.uint8) for v in (0, 51, 102)]
    first = stream.step([images[0]])
    assert first.shape == (1, 1, 3, 2, 2, 3) and torch.all(first == 0)
    stream.step([images[1]])
    third = stream.step([images[2]])
    assert backbone.frames == 3  # one backbone call per new frame, the model built once
    torch.testing.assert_close(third[0, 0, :, 0, 0, 0], torch.tensor([0.0, 0.2, 0.4]))
    stream.reset()
    torch.testing.assert_close(stream.step([images[2]]), torch.full((1, 1, 3, 2, 2, 3), 102 / 255))
