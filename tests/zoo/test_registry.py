"""Every backbone of paper Tab. 4 is registered; the ones without a package explain themselves."""

from __future__ import annotations

import pytest

from vega3d.backbones import BackboneUnavailable, backbone_description, list_backbones, load_backbone
from vega3d.backbones.tiny import save_tiny_model


def test_zoo_names_are_registered():
    assert {"siglip-so400m-384", "dinov3-vitl16", "vjepa2-vitg16", "sd2.1", "svd", "sd-vae", "vggt", "seva", "vmem"} <= set(list_backbones())


@pytest.mark.parametrize("name,package", [("vggt", "facebookresearch/vggt"), ("seva", "stable-virtual-camera"), ("vmem", "vmem")])
def test_unavailable_backbones_say_why_and_what_to_install(name, package):
    with pytest.raises(BackboneUnavailable, match=rf"backbone '{name}' is not available: .*Why: .*{package}.*To use it: install"):
        load_backbone(name, weights="anything")
    assert backbone_description(name).startswith("NOT AVAILABLE")


def test_tiny_model_of_unknown_backbone(tmp_path):
    with pytest.raises(KeyError, match="no tiny model for backbone 'vggt'"):
        save_tiny_model("vggt", tmp_path)


def test_tiny_model_command(tmp_path, capsys):
    from vega3d.cli import main

    folder = tmp_path / "dino"
    assert main(["tiny-model", "dinov3-vitl16", str(folder)]) == 0
    assert "--option resolution=64" in capsys.readouterr().out
    assert load_backbone("dinov3-vitl16", weights=str(folder), resolution=64).weights_label.startswith("RANDOM WEIGHTS")
    assert main(["tiny-model", "dinov3-vitl16", str(folder)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["tiny-model", "vggt", str(tmp_path / "v")]) == 1
    assert "no tiny model for 'vggt'" in capsys.readouterr().err
