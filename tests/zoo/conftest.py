"""Tiny random-weight models of the real library classes, saved once per session and reloaded by the tests."""

from __future__ import annotations

import pytest
import torch

from vega3d.backbones import load_backbone
from vega3d.backbones.tiny import TINY_OPTIONS, save_tiny_model


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """``tiny_weights(name)`` -> folder of a tiny random ``name`` model (written once per session)."""
    root = tmp_path_factory.mktemp("tiny_models")
    folders = {}

    def get(name: str) -> str:
        if name not in folders:
            folders[name] = str(save_tiny_model(name, root / name))
        return folders[name]

    return get


@pytest.fixture(scope="session")
def load_tiny(tiny_weights):
    """``load_tiny(name, **options)``: the backbone through the real loader, from its tiny folder."""

    def load(name: str, **options):
        return load_backbone(name, weights=tiny_weights(name), **{**TINY_OPTIONS[name], **options})

    return load


@pytest.fixture(scope="session")
def frames():
    """Three small frames in [0, 1] from a fixed seed (the backbones resize them to their resolution)."""
    return torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(7))
