"""A counting backbone (records the scenes it encodes) and a small dataset of synthetic scenes."""

from __future__ import annotations

import shutil

import pytest
import torch.nn.functional as F

from vega3d.backbones import Backbone, register_backbone


class CountingBackbone(Backbone):
    name = "test-failure-counting"

    def __init__(self):
        super().__init__()
        self.calls = []

    def encode(self, frames, scene_id=None):
        self.calls.append(scene_id)
        return F.adaptive_avg_pool2d(frames, (2, 2)).permute(0, 2, 3, 1).contiguous()


COUNTING = CountingBackbone()
register_backbone(COUNTING.name, "test backbone that counts calls")(lambda weights=None: COUNTING)


@pytest.fixture
def counting():
    COUNTING.calls.clear()
    return COUNTING


@pytest.fixture
def dataset(tmp_path, synthetic_scene):
    """``a/scene0`` and ``b/scene0``: two scenes of the same name, different content."""
    root = tmp_path / "dataset"
    for group in ("a", "b"):
        shutil.copytree(synthetic_scene, root / group / "scene0")
    for i in range(24):  # b's frames in reverse order: other images under the same frame names
        (root / "b" / "scene0" / f"{i:05d}.jpg").write_bytes((synthetic_scene / f"{23 - i:05d}.jpg").read_bytes())
    return root
