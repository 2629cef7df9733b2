"""Every backbone of paper Tab. 4 is registered; research checkpoints without weights explain where to get them."""

from __future__ import annotations

import pytest

from vega3d.backbones import BackboneUnavailable, backbone_licence, list_backbones, load_backbone
from vega3d.backbones.tiny import save_tiny_model


def test_zoo_names_are_registered():
    assert {"siglip-so400m-384", "dinov3-vitl16", "vjepa2-vitg16", "sd2.1", "svd", "sd-vae", "vggt", "seva", "vmem"} <= set(list_backbones())


@pytest.mark.parametrize("name,hub", [("vggt", "facebook/VGGT-1B"), ("seva", "stabilityai/stable-virtual-camera"),
                                      ("vmem", "liguang0115/vmem")])
def test_research_backbones_without_weights_say_where_to_get_them(name, hub):
    with pytest.raises(BackboneUnavailable, match=rf"backbone '{name}' is not available without its weights: .*{hub}"):
        load_backbone(name)
    assert "NON-COMMERCIAL" in backbone_licence(name).upper()


def test_licences_are_listed(capsys):
    from vega3d.cli import main

    assert main(["awareness", "--list"]) == 0
    listing = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "[licence: Stability AI Non-Commercial License" in listing["seva"]
    assert "CC BY-NC 4.0" in listing["vggt"] and "licence" not in listing["pixels"]


def test_tiny_model_of_unknown_backbone(tmp_path):
    with pytest.raises(KeyError, match="no tiny model for backbone 'nope'"):
        save_tiny_model("nope", tmp_path)


def test_tiny_model_command(tmp_path, capsys):
    from vega3d.cli import main

    folder = tmp_path / "dino"
    assert main(["tiny-model", "dinov3-vitl16", str(folder)]) == 0
    assert "--option resolution=64" in capsys.readouterr().out
    assert load_backbone("dinov3-vitl16", weights=str(folder), resolution=64).weights_label.startswith("RANDOM WEIGHTS")
    assert main(["tiny-model", "dinov3-vitl16", str(folder)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["tiny-model", "pixels", str(tmp_path / "v")]) == 1
    assert "no tiny model for 'pixels'" in capsys.readouterr().err
