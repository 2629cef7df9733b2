"""The shared generative branch: resampling rules and the mixin's projection + fusion."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vega3d.fusion import build_fusion
from vega3d.models import GenerativeBranch, GenerativeSettings, resample_tokens


def test_groups_average_frames_and_pad_the_last_group():
    tokens = torch.arange(3 * 2 * 2 * 1, dtype=torch.float32).reshape(3, 2, 2, 1)
    out = resample_tokens(tokens, (2, 2), frames_per_group=2)
    assert out.shape == (2, 2, 2, 1)
    torch.testing.assert_close(out[0], (tokens[0] + tokens[1]) / 2)
    torch.testing.assert_close(out[1], tokens[2])  # padded by repeating the last frame


def test_area_pools_blocks_and_bilinear_matches_interpolate():
    tokens = torch.randn(2, 4, 6, 3)
    area = resample_tokens(tokens, (2, 3))
    by_hand = tokens.reshape(2, 2, 2, 3, 2, 3).mean(dim=(2, 4))
    torch.testing.assert_close(area, by_hand)
    bilinear = resample_tokens(tokens, (3, 5), mode="bilinear")
    expected = F.interpolate(tokens.permute(0, 3, 1, 2), size=(3, 5), mode="bilinear", align_corners=False)
    torch.testing.assert_close(bilinear, expected.permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="resample mode"):
        resample_tokens(tokens, (2, 3), mode="nearest")


class Host(GenerativeBranch, nn.Module):
    def __init__(self, settings):
        super().__init__()
        self.init_generative_branch(settings, 8)


def test_mixin_projects_then_fuses_per_group_and_is_seeded():
    settings = GenerativeSettings(backbone="pixels", feature_dim=3, fusion="add")
    host = Host(settings)
    assert sorted(name for name, _ in host.named_children()) == ["fusion", "generative_projector"]
    sem, gen = torch.randn(2, 6, 8), torch.randn(2, 2, 3, 3)
    fused = host.fuse_generative(sem, gen)
    torch.testing.assert_close(fused, sem + host.generative_projector(gen.reshape(2, 6, 3)))
    twin = Host(settings)
    for a, b in zip(host.adapter_parameters(), twin.adapter_parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="expects 3"):
        host.fuse_generative(sem, torch.randn(2, 2, 3, 4))
    with pytest.raises(ValueError, match="6"):
        host.fuse_generative(sem, torch.randn(2, 1, 3, 3))


def test_init_adapter_weights_restores_the_module_init():
    host = Host(GenerativeSettings(backbone="pixels", feature_dim=3, fusion="gated", fusion_options={"preset": "residual"}))
    reference = build_fusion("gated", 8, preset="residual").state_dict()
    with torch.no_grad():
        for p in host.fusion.parameters():
            p.fill_(7.0)
    for module in host.fusion.modules():
        host.init_adapter_weights(module)
    assert set(reference) == set(host.fusion.state_dict())
    assert not any(torch.all(v == 7.0) for v in host.fusion.state_dict().values())
    assert host.init_adapter_weights(nn.Linear(2, 2)) is False
