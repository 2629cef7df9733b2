"""SigLIP, DINOv3, V-JEPA 2: shapes, the library's own outputs as reference, options, sweeps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vega3d.backbones.pretrained import preprocessing_constants
from vega3d.backbones.registry import RANDOM_WEIGHTS_LABEL

VITS = ["siglip-so400m-384", "dinov3-vitl16", "vjepa2-vitg16"]


def _pixel_values(frames, size, mode, mean, std):
    """The preprocessing written out independently: resize the whole frame, then normalise."""
    pixels = F.interpolate(frames, size=(size, size), mode=mode, antialias=True, align_corners=False).clamp(0, 1)
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("name", VITS)
def test_shape_label_and_determinism(load_tiny, frames, name):
    backbone = load_tiny(name)
    tokens = backbone(frames)
    assert tokens.shape == (3, 14, 14, backbone.model.config.hidden_size)
    assert tokens.dtype == torch.float32 and torch.isfinite(tokens).all()
    assert torch.equal(tokens, backbone(frames))
    assert backbone.has_weights and backbone.weights_label == RANDOM_WEIGHTS_LABEL
    assert backbone.config()["weights"] == RANDOM_WEIGHTS_LABEL
    assert not any(p.requires_grad for p in backbone.parameters()) and not backbone.training
    assert backbone(frames, scene_id="x").shape == tokens.shape


def test_siglip_matches_library_forward(load_tiny, tiny_weights, frames):
    """layer=None is the post-LayerNorm output, layer=-2 the output of the second-to-last block."""
    from transformers import SiglipVisionModel

    model = SiglipVisionModel.from_pretrained(tiny_weights("siglip-so400m-384"))
    pixel_values = _pixel_values(frames, 56, "bicubic", [0.5] * 3, [0.5] * 3)
    with torch.no_grad():
        out = model(pixel_values, output_hidden_states=True)
    final = load_tiny("siglip-so400m-384", grid=(4, 4), layer=None)(frames)
    torch.testing.assert_close(final, out.last_hidden_state.reshape(3, 4, 4, -1), atol=1e-5, rtol=1e-5)
    penultimate = load_tiny("siglip-so400m-384", grid=(4, 4))(frames)  # default layer=-2
    torch.testing.assert_close(penultimate, out.hidden_states[-2].reshape(3, 4, 4, -1), atol=1e-5, rtol=1e-5)


def test_dinov3_drops_cls_and_register_tokens(load_tiny, tiny_weights, frames):
    from transformers import DINOv3ViTModel

    model = DINOv3ViTModel.from_pretrained(tiny_weights("dinov3-vitl16"))
    assert model.config.num_register_tokens == 2
    pixel_values = _pixel_values(frames, 64, "bilinear", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        out = model(pixel_values, output_hidden_states=True)
    native = load_tiny("dinov3-vitl16", grid=(4, 4))(frames)
    torch.testing.assert_close(native, out.last_hidden_state[:, 3:].reshape(3, 4, 4, -1), atol=1e-5, rtol=1e-5)
    # The default 14x14 grid is the adaptive average pool of the native 4x4 grid.
    pooled = F.adaptive_avg_pool2d(native.permute(0, 3, 1, 2), 14).permute(0, 2, 3, 1)
    torch.testing.assert_close(load_tiny("dinov3-vitl16")(frames), pooled, atol=1e-5, rtol=1e-5)
    block1 = load_tiny("dinov3-vitl16", grid=(4, 4), layer=1)(frames)
    torch.testing.assert_close(block1, out.hidden_states[2][:, 3:].reshape(3, 4, 4, -1), atol=1e-5, rtol=1e-5)


def test_vjepa2_one_clip_and_odd_frame_counts(load_tiny, tiny_weights, frames):
    """Frames form one clip of tubelets of 2; frame i gets tubelet i // 2; an odd count repeats the last frame."""
    from transformers import VJEPA2Model

    backbone = load_tiny("vjepa2-vitg16", grid=(4, 4))
    tokens = backbone(frames)  # 3 frames: clip [f0, f1, f2, f2]
    model = VJEPA2Model.from_pretrained(tiny_weights("vjepa2-vitg16"), crop_size=64)
    clip = _pixel_values(torch.cat([frames, frames[-1:]]), 64, "bilinear", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.no_grad():
        reference = model(clip[None], skip_predictor=True).last_hidden_state.reshape(2, 4, 4, -1)
    torch.testing.assert_close(tokens, reference[[0, 0, 1]], atol=1e-5, rtol=1e-5)
    # The clip is one sequence: frames influence each other's tokens through attention.
    changed = frames.clone()
    changed[2] = 1.0 - changed[2]
    assert not torch.allclose(backbone(changed)[0], tokens[0], atol=1e-4)
    single = backbone(frames[:1])
    assert single.shape == (1, 4, 4, 48)


@pytest.mark.parametrize("name", VITS)
def test_layer_sweep_reuses_one_model(load_tiny, frames, name):
    backbone = load_tiny(name)
    model = backbone.model
    first = backbone.set_options(layer=0)(frames)
    last = backbone.set_options(layer=-1)(frames)
    assert backbone.model is model and backbone.layer == -1
    assert not torch.allclose(first, last, atol=1e-4)
    torch.testing.assert_close(first, load_tiny(name, layer=0)(frames))
    with pytest.raises(ValueError, match=r"layer must be an integer in \[-3, 2\] \(3 encoder blocks\); got 3"):
        backbone.set_options(layer=3)
    with pytest.raises(ValueError, match="cannot change \\['resolution'\\] after loading"):
        backbone.set_options(resolution=128)


def test_grid_option(load_tiny, frames):
    backbone = load_tiny("dinov3-vitl16", grid=7)
    assert backbone(frames).shape[1:3] == (7, 7)
    assert backbone.set_options(grid=(2, 3))(frames).shape[1:3] == (2, 3)
    with pytest.raises(ValueError, match="grid must be positive"):
        backbone.set_options(grid=0)


def test_preprocessing_constants_from_processor_config(tiny_weights, tmp_path):
    assert preprocessing_constants(tiny_weights("siglip-so400m-384"), "preprocessor_config.json", (0,) * 3, (1,) * 3) == (
        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert preprocessing_constants(str(tmp_path), "preprocessor_config.json", (0.1,) * 3, (0.2,) * 3) == (
        (0.1, 0.1, 0.1), (0.2, 0.2, 0.2))


def test_missing_weights_name_the_folder(tmp_path):
    from vega3d.backbones import load_backbone

    with pytest.raises(FileNotFoundError, match=r"cannot load DINOv3ViTModel weights from '.*empty'"):
        load_backbone("dinov3-vitl16", weights=str(tmp_path / "empty"))


@pytest.mark.parametrize("name,module", [("dinov3-vitl16", "model"), ("sd-vae", "vae")])
def test_bfloat16_models_return_float32_tokens(load_tiny, frames, name, module):
    reference = load_tiny(name)(frames)
    half = load_tiny(name, dtype="bfloat16")
    assert next(getattr(half, module).parameters()).dtype == torch.bfloat16
    tokens = half(frames)
    assert tokens.dtype == torch.float32
    assert F.cosine_similarity(tokens.flatten(1), reference.flatten(1)).min() > 0.98
    with pytest.raises(ValueError, match="dtype must be a torch dtype name"):
        load_tiny(name, dtype="float33")


def test_siglip_loads_the_vision_tower_of_a_full_siglip_checkpoint(tmp_path, frames):
    """The hub's google/siglip-so400m-patch14-384 holds the whole SiglipModel (text + vision)."""
    from transformers import SiglipConfig, SiglipModel

    from vega3d.backbones import load_backbone

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=56, patch_size=14)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    torch.manual_seed(0)
    full = SiglipModel(SiglipConfig(vision_config=vision, text_config=text)).eval()
    full.save_pretrained(tmp_path)
    with torch.no_grad():
        reference = full.vision_model(_pixel_values(frames, 56, "bicubic", [0.5] * 3, [0.5] * 3)).last_hidden_state
    tokens = load_backbone("siglip-so400m-384", weights=str(tmp_path), resolution=56, grid=(4, 4), layer=None)(frames)
    torch.testing.assert_close(tokens, reference.reshape(3, 4, 4, -1), atol=1e-5, rtol=1e-5)
