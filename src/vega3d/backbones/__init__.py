"""Backbones: ``load_backbone(name, weights=None, **options)`` and ``list_backbones()``.

Each module below registers its backbones on import; add new ones to ``_MODULES``.
"""

import importlib

from vega3d.backbones.registry import (
    Backbone,
    BackboneUnavailable,
    backbone_description,
    backbone_licence,
    check_frames,
    list_backbones,
    load_backbone,
    register_backbone,
)

_MODULES = ["baselines", "vit", "diffusion", "vggt", "seva", "wan", "video_dit"]

for _module in _MODULES:
    importlib.import_module(f"vega3d.backbones.{_module}")

__all__ = [
    "Backbone",
    "BackboneUnavailable",
    "backbone_description",
    "backbone_licence",
    "check_frames",
    "list_backbones",
    "load_backbone",
    "register_backbone",
]
