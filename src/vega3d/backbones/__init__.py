"""Backbones: ``load_backbone(name, weights=None, **options)`` and ``list_backbones()``.

Each module below registers its backbones on import; add new ones to ``_MODULES``. They (and torch) are
imported on first use of this package's API, so importing ``vega3d.backbones.cli_options`` stays cheap.
"""

_MODULES = ["baselines", "vit", "diffusion", "vggt", "seva", "wan", "video_dit"]

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


def __getattr__(name: str):
    if name in __all__:
        from vega3d.backbones import registry

        registry.import_builtin_backbones()
        return getattr(registry, name)
    raise AttributeError(f"module 'vega3d.backbones' has no attribute {name!r}")
