"""sd2.1, svd, sd-vae: shapes, an independent recomputation with diffusers, timestep/block/seed options, sweeps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vega3d.backbones.registry import RANDOM_WEIGHTS_LABEL

UNETS = ["sd2.1", "svd"]


def _vae_input(frames, size=32):
    return F.interpolate(frames, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1) * 2 - 1


@pytest.mark.parametrize("name,channels", [("sd2.1", 64), ("svd", 64), ("sd-vae", 4)])
def test_shape_label_and_determinism(load_tiny, frames, name, channels):
    backbone = load_tiny(name)
    tokens = backbone(frames)
    assert tokens.shape == (3, 14, 14, channels) and torch.isfinite(tokens).all()
    assert torch.equal(tokens, backbone(frames))
    assert backbone.weights_label == RANDOM_WEIGHTS_LABEL and backbone.config()["resolution"] == 32


def test_sd21_matches_an_independent_diffusers_computation(load_tiny, tiny_weights, frames):
    """VAE mean x 0.18215, DDIM noise at t=250 from the seeded generator, empty-prompt CLIP embedding, and
    the feature the UNet's mid block receives (captured during a full, unstopped forward)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = tiny_weights("sd2.1")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    captured = []
    unet.mid_block.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    with torch.no_grad():
        latents = vae.encode(_vae_input(frames)).latent_dist.mean * 0.18215
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))
        noisy = scheduler.add_noise(latents, noise, torch.tensor([250]))
        ids = tokenizer([""] * 3, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        unet(noisy, 250, encoder_hidden_states=text_encoder(ids).last_hidden_state)
    expected = captured[0].permute(0, 2, 3, 1)
    torch.testing.assert_close(load_tiny("sd2.1", grid=(2, 2))(frames), expected, atol=1e-4, rtol=1e-4)
    # Frames are independent images: the result does not depend on how they are batched.
    torch.testing.assert_close(load_tiny("sd2.1", grid=(2, 2), batch_size=1)(frames), expected, atol=1e-4, rtol=1e-4)


def test_sd_vae_is_the_latent_mean_and_loads_a_bare_vae_folder(load_tiny, tiny_weights, frames):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tiny_weights("sd-vae"))  # config.json at the folder's root
    with torch.no_grad():
        mean = vae.encode(_vae_input(frames)).latent_dist.mean
    torch.testing.assert_close(load_tiny("sd-vae", grid=(4, 4))(frames), mean.permute(0, 2, 3, 1), atol=1e-5, rtol=1e-5)
    # A pipeline folder works too: its vae/ sub-folder is used.
    from vega3d.backbones import load_backbone

    assert load_backbone("sd-vae", weights=tiny_weights("sd2.1"), resolution=32)(frames).shape == (3, 14, 14, 4)


@pytest.mark.parametrize("name", UNETS)
def test_timestep_block_seed_sweep_reuses_one_model(load_tiny, frames, name):
    backbone = load_tiny(name)
    unet = backbone.unet
    by_timestep = {t: backbone.set_options(timestep=t)(frames) for t in (0, 250, 900)}
    assert not torch.allclose(by_timestep[0], by_timestep[250], atol=1e-4)
    assert not torch.allclose(by_timestep[250], by_timestep[900], atol=1e-4)
    other_seed = backbone.set_options(timestep=250, seed=1)(frames)
    assert not torch.allclose(other_seed, by_timestep[250], atol=1e-4)
    first_block = backbone.set_options(seed=0, block=0)(frames)
    assert first_block.shape == (3, 14, 14, 32)  # the first down block has 32 channels, the last 64
    assert backbone.unet is unet
    torch.testing.assert_close(by_timestep[900], load_tiny(name, timestep=900)(frames))
    with pytest.raises(ValueError, match=r"timestep must be an integer in \[0, 999\]"):
        backbone.set_options(timestep=1000)
    with pytest.raises(ValueError, match=r"block must be an integer in \[-2, 1\] \(2 UNet down blocks\)"):
        backbone.set_options(block=2)


def test_svd_sees_the_frames_as_one_video(load_tiny, frames):
    """Temporal attention couples the frames of the video: changing the last frame changes the first
    frame's tokens; sd2.1 encodes frames independently, so there it does not."""
    changed = frames.clone()
    changed[2] = 1.0 - changed[2]
    svd, sd = load_tiny("svd"), load_tiny("sd2.1")
    assert not torch.allclose(svd(changed)[0], svd(frames)[0], atol=1e-5)
    torch.testing.assert_close(sd(changed)[0], sd(frames)[0])
    assert svd.config()["conditioning"].startswith("first frame")


def test_sd21_drops_the_text_encoder_after_embedding_the_prompt(load_tiny):
    backbone = load_tiny("sd2.1")
    assert not hasattr(backbone, "text_encoder")
    assert backbone.prompt_embedding.shape == (1, 8, 32)
    assert backbone.num_parameters == sum(p.numel() for p in [*backbone.vae.parameters(), *backbone.unet.parameters()])
