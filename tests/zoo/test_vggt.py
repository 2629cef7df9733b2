"""VGGT's aggregator: the published layout, the DINOv2 front end, RoPE, strict loading, the full-size inventory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from vega3d.backbones import load_backbone
from vega3d.backbones.checkpoints import WeightsError
from vega3d.backbones.registry import RANDOM_WEIGHTS_LABEL
from vega3d.backbones.vggt import VggtAggregator, VggtConfig, load_aggregator, rope_2d, to_published


def test_tiny_vggt_through_the_real_loader(load_tiny, frames):
    backbone = load_tiny("vggt")
    tokens = backbone(frames)
    assert tokens.shape == (3, 14, 14, 64) and torch.isfinite(tokens).all()  # 2 x dim: [frame | global]
    assert backbone.weights_label == RANDOM_WEIGHTS_LABEL and backbone.config()["native_grid"] == [4, 4]
    assert torch.equal(tokens, backbone(frames))
    # The global blocks attend over all frames of the call: frame 0's tokens depend on the other frames.
    assert not torch.allclose(backbone(frames[:1])[0], tokens[0], atol=1e-4)
    changed = frames.clone()
    changed[2] = 1 - changed[2]
    assert not torch.allclose(backbone(changed)[0], tokens[0], atol=1e-4)
    # Frame 0 gets camera/register slot 0, the others slot 1: the same image twice gives two results.
    twice = backbone(frames[:1].expand(2, -1, -1, -1))
    assert not torch.allclose(twice[0], twice[1], atol=1e-4)


def _dinov2_by_hand(state: dict, images: torch.Tensor, heads: int) -> torch.Tensor:
    """DINOv2-with-registers written out from VGGT's own tensor names (fused qkv, ls gamma), at the native grid."""
    p = lambda name: state[f"patch_embed.{name}"]  # noqa: E731
    x = F.conv2d(images, p("patch_embed.proj.weight"), p("patch_embed.proj.bias"), stride=14).flatten(2).transpose(1, 2)
    x = torch.cat([p("cls_token").expand(len(x), -1, -1), x], dim=1) + p("pos_embed")
    x = torch.cat([x[:, :1], p("register_tokens").expand(len(x), -1, -1), x[:, 1:]], dim=1)
    dim = x.shape[-1]
    for n in range(len({k.split(".")[2] for k in state if k.startswith("patch_embed.blocks.")})):
        b = lambda name: state[f"patch_embed.blocks.{n}.{name}"]  # noqa: E731
        h = F.layer_norm(x, (dim,), b("norm1.weight"), b("norm1.bias"), eps=1e-6)
        q, k, v = F.linear(h, b("attn.qkv.weight"), b("attn.qkv.bias")).reshape(*h.shape[:2], 3, heads, -1).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v
        x = x + b("ls1.gamma") * F.linear(attn.transpose(1, 2).reshape(h.shape), b("attn.proj.weight"), b("attn.proj.bias"))
        h = F.layer_norm(x, (dim,), b("norm2.weight"), b("norm2.bias"), eps=1e-6)
        x = x + b("ls2.gamma") * F.linear(F.gelu(F.linear(h, b("mlp.fc1.weight"), b("mlp.fc1.bias"))), b("mlp.fc2.weight"), b("mlp.fc2.bias"))
    return F.layer_norm(x, (dim,), p("norm.weight"), p("norm.bias"), eps=1e-6)


def test_front_end_is_transformers_dinov2_with_vggt_tensors(tiny_weights):
    state = {k.removeprefix("aggregator."): v for k, v in load_file(f"{tiny_weights('vggt')}/model.safetensors").items()}
    model = load_aggregator(f"{tiny_weights('vggt')}/model.safetensors")
    images = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))  # the position table's own 2x2 grid
    with torch.no_grad():
        ours = model.patch_embed(pixel_values=images).last_hidden_state
    torch.testing.assert_close(ours, _dinov2_by_hand(state, images, heads=2), atol=1e-5, rtol=1e-5)


def test_rope_rotates_rows_then_columns_by_hand():
    """D = 8: dims 0-3 rotate with the row y, dims 4-7 with the column x; frequencies 100^(-2j/4), j < 2."""
    x = torch.arange(1.0, 9.0).view(1, 1, 1, 8)
    y_pos, x_pos = 2.0, 3.0
    out = rope_2d(x, torch.tensor([[y_pos, x_pos]]), frequency=100.0)[0, 0, 0]
    expected = []
    for (a, b, c, d), pos in (((1, 2, 3, 4), y_pos), ((5, 6, 7, 8), x_pos)):
        f0, f1 = pos * 1.0, pos * 100 ** -0.5
        # table = [f0, f1, f0, f1]; rotate-half partner of (a, b, c, d) is (-c, -d, a, b)
        expected += [a * math.cos(f0) - c * math.sin(f0), b * math.cos(f1) - d * math.sin(f1),
                     c * math.cos(f0) + a * math.sin(f0), d * math.cos(f1) + b * math.sin(f1)]
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-5, rtol=1e-5)
    # The defining property: q.k after RoPE depends only on the position difference.
    q, k = torch.randn(2, 1, 1, 1, 16, generator=torch.Generator().manual_seed(1)).unbind(0)
    dot = lambda pq, pk: (rope_2d(q, torch.tensor([pq]), 100.0) * rope_2d(k, torch.tensor([pk]), 100.0)).sum()  # noqa: E731
    torch.testing.assert_close(dot([1.0, 2.0], [3.0, 7.0]), dot([4.0, 0.0], [6.0, 5.0]), atol=1e-5, rtol=1e-5)


def _tiny_state(tiny_weights):
    return load_file(f"{tiny_weights('vggt')}/model.safetensors")


def test_strict_loading_names_the_file_and_the_keys(tiny_weights, tmp_path):
    state = _tiny_state(tiny_weights)
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "aggregator.global_blocks.1.attn.q_norm.weight"},
                    r"1 missing \(global_blocks\.1\.attn\.q_norm\.weight\)"),
        "unexpected": ({**state, "aggregator.frame_blocks.0.extra": torch.zeros(1)}, r"1 unexpected \(frame_blocks\.0\.extra\)"),
        "shape": ({**state, "aggregator.frame_blocks.0.ls1.gamma": torch.zeros(5)}, r"frame_blocks\.0\.ls1\.gamma \(5,\) != \(32,\)"),
        "foreign": ({**state, "decoder.weight": torch.zeros(1)}, r"neither VGGT's aggregator nor its heads: decoder\.weight"),
        "not_vggt": ({"aggregator.x": torch.zeros(1)}, r"not a VGGT checkpoint \(no tensor aggregator\.camera_token\)"),
    }
    for name, (broken, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(broken, str(path))
        with pytest.raises(WeightsError, match=rf"{name}\.safetensors: .*{message}"):
            load_backbone("vggt", weights=str(path), resolution=56)


def test_heads_are_dropped_and_pickles_load_without_code(tiny_weights, tmp_path, frames):
    state = _tiny_state(tiny_weights)
    reference = load_backbone("vggt", weights=tiny_weights("vggt"), resolution=56)(frames)
    folder = tmp_path / "VGGT-1B"
    folder.mkdir()
    full = {f"module.{k}": v for k, v in {**state, "camera_head.trunk.0.weight": torch.zeros(2)}.items()}
    torch.save(full, folder / "model.pt")  # the upstream release: a plain pickled state dict
    backbone = load_backbone("vggt", weights=str(folder), resolution=56)
    assert backbone.weight_file.name == "model.pt"
    assert torch.equal(backbone(frames), reference)


def test_options_and_missing_files(tiny_weights, tmp_path):
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        load_backbone("vggt", weights=tiny_weights("vggt"), resolution=50)
    with pytest.raises(FileNotFoundError, match="no VGGT weight file .*model.safetensors, model.pt"):
        load_backbone("vggt", weights=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nor a hub id in the local Hugging Face cache"):
        load_backbone("vggt", weights="nobody/VGGT-1B")


def test_full_size_key_set_and_shapes_on_meta():
    with torch.device("meta"):
        model = VggtAggregator(VggtConfig())
    published = {k: tuple(v.shape) for k, v in to_published(model.state_dict()).items()}
    assert len(published) == 1210
    assert published["camera_token"] == (1, 2, 1, 1024) and published["register_token"] == (1, 2, 4, 1024)
    assert published["patch_embed.pos_embed"] == (1, 1370, 1024) and published["patch_embed.mask_token"] == (1, 1024)
    assert published["patch_embed.blocks.23.attn.qkv.weight"] == (3072, 1024)
    assert published["global_blocks.23.attn.k_norm.bias"] == (64,) and published["frame_blocks.0.mlp.fc2.weight"] == (1024, 4096)
    assert sum(p.numel() for p in model.parameters()) == 909_112_320
    assert sum(p.numel() for p in model.patch_embed.parameters()) == 304_372_736
    assert VggtConfig.from_state_dict(to_published(model.state_dict()), "x") == VggtConfig()
