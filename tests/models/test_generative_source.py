"""Generative tokens: cache-or-encode online, store-only offline, and clear errors for wrong entries."""

from __future__ import annotations

import pytest
import torch

from vega3d.models import GenerativeSettings
from vega3d.models.clips import load_clip
from vega3d.models.generative import GenerativeSource
from vega3d.store import FeatureStore

PIXELS = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [4, 4]})


@pytest.fixture(scope="module")
def clips(synthetic_scene):
    return load_clip(synthetic_scene, 3, (56, 56)), load_clip(synthetic_scene, 4, (56, 56))


def test_online_encodes_once_into_the_store_and_offline_reads_it_back(tmp_path, clips):
    clip = clips[0]
    online = GenerativeSource(PIXELS, "online", store=tmp_path)
    tokens = online.tokens(clip)
    expected = torch.nn.functional.adaptive_avg_pool2d(clip.images, (4, 4)).permute(0, 2, 3, 1)
    torch.testing.assert_close(tokens, expected)
    assert online.tokens(clip) is tokens  # cached in memory
    offline = GenerativeSource(PIXELS, "offline", store=tmp_path)
    torch.testing.assert_close(offline.tokens(clip), tokens)
    assert offline._backbone is None  # offline never builds the backbone
    assert FeatureStore(tmp_path).contains(clip.scene_id, online.backbone.config(), clip.frame_indices)


def test_offline_refuses_entries_of_another_backbone_or_sampling(tmp_path, clips):
    three, four = clips
    with pytest.raises(ValueError, match="no stored generative features for scene 'synthetic_room'"):
        GenerativeSource(PIXELS, "offline", store=tmp_path).tokens(three)
    GenerativeSource(GenerativeSettings(backbone="position", feature_dim=16), "online", store=tmp_path).tokens(three)
    GenerativeSource(PIXELS, "online", store=tmp_path).tokens(four)
    offline = GenerativeSource(PIXELS, "offline", store=tmp_path)
    with pytest.raises(ValueError, match="come from another backbone or frame sampling") as error:
        offline.tokens(three)
    assert "('position', [0, 11, 23])" in str(error.value) and "('pixels', [0, 7, 15, 23])" in str(error.value)
    other_grid = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [2, 2]})
    with pytest.raises(ValueError, match="come from another backbone or frame sampling"):
        GenerativeSource(other_grid, "offline", store=tmp_path).tokens(four)
    torch.testing.assert_close(offline.tokens(four).shape, torch.Size([4, 4, 4, 3]))


def test_feature_width_must_match_the_model(clips):
    wrong = GenerativeSettings(backbone="pixels", feature_dim=8)
    with pytest.raises(ValueError, match="gives 3-channel tokens; the model's generative branch expects feature_dim=8"):
        GenerativeSource(wrong).tokens(clips[0])
    with pytest.raises(ValueError, match="'offline' needs a feature store"):
        GenerativeSource(PIXELS, "offline")
