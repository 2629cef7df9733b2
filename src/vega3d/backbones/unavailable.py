"""Backbones of paper Tab. 4 that no maintained package provides: registered, so a request for one gets a
clear reason and a way forward instead of "unknown backbone"."""

from __future__ import annotations

from vega3d.backbones.registry import BackboneUnavailable, register_backbone

UNAVAILABLE = {
    "vggt": (
        "VGGT (ViT-L/14 + aggregator at 196x196, last aggregator patch tokens, 2048 channels)",
        "VGGT ships only as the research repository facebookresearch/vggt (not on PyPI, no transformers/diffusers "
        "class)",
        "install it from that repository (pip install git+https://github.com/facebookresearch/vggt) and register a "
        "backbone that wraps its aggregator",
    ),
    "seva": (
        "SEVA / Stable Virtual Camera (VAE + UNet at 896x896, final input-block feature, 1280 channels)",
        "SEVA ships only as the research repository Stability-AI/stable-virtual-camera with its own model code "
        "(no diffusers pipeline)",
        "install that repository and register a backbone that hooks its last input block",
    ),
    "vmem": (
        "Vmem (VAE + UNet at 896x896, final input-block feature, 1280 channels)",
        "Vmem ships only as the research repository runjiali-rl/vmem, built on SEVA's model code (no package)",
        "install that repository and register a backbone that hooks its last input block",
    ),
}


def _unavailable(name: str):
    what, why, how = UNAVAILABLE[name]

    def factory(weights=None, **options):
        raise BackboneUnavailable(f"backbone {name!r} is not available: {what}. Why: {why}. To use it: {how}.")

    return factory


for _name, (_what, _why, _how) in UNAVAILABLE.items():
    register_backbone(_name, f"NOT AVAILABLE here: {_what}")(_unavailable(_name))
