"""Every video DiT family on one feature path: tiny random models of the real diffusers classes."""

import json
from pathlib import Path

import pytest
import torch

from vega3d import list_backbones, load_backbone
from vega3d.backbones.registry import backbone_licence
from vega3d.backbones.tiny import TINY_OPTIONS, TINY_VIDEO_DITS
from vega3d.backbones.video_dit import FAMILIES, VideoDiTBackbone, clip_latent_index, pack_frames, truncated

NAMES = sorted(TINY_VIDEO_DITS)


@pytest.fixture(scope="module")
def tiny_folders(tiny_weights):
    return {name: Path(tiny_weights(name)) for name in NAMES}  # the session's tiny models (conftest)


def _backbone(folders, name, **options):
    return load_backbone(name, folders[name], **{**TINY_OPTIONS[name], "grid": (2, 2), **options})


@pytest.mark.parametrize("name", NAMES)
def test_truncated_model_equals_a_hook_on_the_full_model(tiny_folders, name):
    import diffusers

    backbone = _backbone(tiny_folders, name, block=1)
    assert sum(len(getattr(backbone.transformer, a)) for a in FAMILIES[name].block_lists) == 2  # blocks 0..1 only
    assert "RANDOM WEIGHTS" in backbone.weights_label
    full = getattr(diffusers, FAMILIES[name].transformer).from_pretrained(str(tiny_folders[name] / "transformer")).eval()
    torch.manual_seed(0)
    latents = torch.randn(2, backbone.vae.config.latent_channels, 2, 4, 4)
    captured = {}
    blocks = [b for a in FAMILIES[name].block_lists for b in getattr(full, a)]

    def hook(_module, _inputs, output):
        captured["out"] = output[0] if isinstance(output, tuple) else output

    blocks[1].register_forward_hook(hook)
    patch = full.config.patch_size
    p = patch[-1] if isinstance(patch, (list, tuple)) else patch
    with torch.no_grad():
        full(**backbone._inputs(latents, 300.0), return_dict=False)
        expected = captured["out"][:, : 2 * (4 // p) ** 2].unflatten(1, (2, 4 // p, 4 // p))
        torch.testing.assert_close(backbone.block_tokens(latents, 300.0), expected)


@pytest.mark.parametrize("name", NAMES)
def test_frames_in_tokens_out_seeded_per_scene(tiny_folders, name):
    backbone = _backbone(tiny_folders, name)
    frames = torch.rand(2, 3, 20, 24)
    a, b = backbone(frames, scene_id="scene0"), backbone(frames, scene_id="scene0")
    config = backbone.transformer.config
    assert a.shape == (2, 2, 2, config.attention_head_dim * config.num_attention_heads)
    torch.testing.assert_close(a, b)  # the same seeded noise
    assert not torch.allclose(a, backbone(frames, scene_id="scene1"))
    backbone.frame_mode = "clip"
    assert backbone(frames, scene_id="scene0").shape == a.shape  # every frame keeps tokens in a clip


def test_clip_packing_repeats_the_last_frame_to_rn_plus_1():
    video = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    clips, where = pack_frames(video, "clip", 6)  # Mochi: 6n + 1 frames
    assert clips.shape[2] == 7 and torch.all(clips[0, :, 3:] == 2)
    assert where == [(0, 0), (0, 1), (0, 1)] and clip_latent_index(9, 8) == [0] + [1] * 8
    with pytest.raises(ValueError, match="frame_mode"):
        pack_frames(video, "pairs", 4)


def test_noise_rules_match_each_schedulers_own_formula(tiny_folders):
    from diffusers import CogVideoXDDIMScheduler, FlowMatchEulerDiscreteScheduler

    z0, eps = torch.randn(1, 4, 1, 2, 2), torch.randn(1, 4, 1, 2, 2)
    cog = _backbone(tiny_folders, "cogvideox-2b", timestep=300)
    scheduler = CogVideoXDDIMScheduler.from_pretrained(str(tiny_folders["cogvideox-2b"] / "scheduler"))
    noisy, shown = cog.noised(z0, eps)
    torch.testing.assert_close(noisy, scheduler.add_noise(z0, eps, torch.tensor([300])), rtol=1e-5, atol=1e-6)
    assert shown == 300.0
    cog.set_options(timestep=1000)  # DDPM steps stop at 999
    assert cog.noised(z0, eps)[1] == 999.0

    flow = _backbone(tiny_folders, "hunyuanvideo", timestep=250)
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(sigmas=[0.25])
    noisy, shown = flow.noised(z0, eps)
    torch.testing.assert_close(noisy, scheduler.scale_noise(z0, scheduler.timesteps[:1], eps))
    assert shown == pytest.approx(float(scheduler.timesteps[0]))

    mochi = _backbone(tiny_folders, "mochi-1", timestep=250)
    inverted = FlowMatchEulerDiscreteScheduler(invert_sigmas=True)  # Mochi's scheduler: a reversed clock
    inverted.set_timesteps(sigmas=[0.25])
    noisy, shown = mochi.noised(z0, eps)
    torch.testing.assert_close(noisy, 0.75 * z0 + 0.25 * eps)
    assert shown == pytest.approx(float(inverted.timesteps[0])) == 750.0


def test_truncated_config_spans_dual_and_single_stream_lists():
    family = FAMILIES["hunyuanvideo"]
    assert truncated(family, {"num_layers": 20, "num_single_layers": 40}, 5) == {"num_layers": 6, "num_single_layers": 0}
    assert truncated(family, {"num_layers": 20, "num_single_layers": 40}, 29) == {"num_layers": 20, "num_single_layers": 10}


def test_registry_lists_families_with_licences_and_bad_options_are_errors(tiny_folders, tmp_path):
    names = list_backbones()
    for name in ["wan2.2-ti2v-5b", *NAMES]:
        assert name in names
    assert backbone_licence("mochi-1") == "Apache-2.0" and "licence" in backbone_licence("cogvideox-5b")
    with pytest.raises(ValueError, match="out of range"):
        _backbone(tiny_folders, "ltx-video", block=3)
    with pytest.raises(ValueError, match="multiples of 32"):
        _backbone(tiny_folders, "ltx-video", size=(48, 48))
    with pytest.raises(FileNotFoundError, match="needs transformer/ and vae/"):
        VideoDiTBackbone("mochi-1", tmp_path)
    bad = tmp_path / "prompt"
    bad.mkdir()
    for part in ("transformer", "vae"):
        (bad / part).symlink_to(tiny_folders["mochi-1"] / part)
    with pytest.raises(FileNotFoundError, match="vega3d prompt-embedding --backbone mochi-1"):
        VideoDiTBackbone("mochi-1", bad)
    assert json.loads((tiny_folders["mochi-1"] / "model_index.json").read_text())["_class_name"] == "MochiPipeline"


def test_wan22_ti2v_5b_runs_through_the_wan_path():
    backbone = load_backbone("wan2.2-ti2v-5b", "random", block=1, size=(64, 64), grid=(2, 2),
                             transformer_config=dict(num_attention_heads=2, attention_head_dim=8, ffn_dim=16, num_layers=2,
                                                     text_dim=16, freq_dim=8),
                             vae_config=dict(base_dim=8, decoder_base_dim=8, num_res_blocks=1))
    assert backbone.vae.config.z_dim == 48 and backbone.vae.config.scale_factor_spatial == 16
    assert backbone(torch.rand(2, 3, 32, 32), scene_id="s").shape == (2, 2, 2, 16)
    with pytest.raises(ValueError, match="multiples of 32"):
        load_backbone("wan2.2-ti2v-5b", "random", size=(48, 48))
    tiny = dict(num_attention_heads=2, attention_head_dim=8, ffn_dim=16, num_layers=1, text_dim=16, freq_dim=8)
    assert load_backbone("wan2.2-ti2v-5b", "random", block=0, transformer_config=tiny,
                         vae_config=dict(base_dim=8, decoder_base_dim=8, num_res_blocks=1)).size == (704, 1280)


def test_prompt_embedding_verb_names_a_folder_without_a_pipeline(tmp_path, capsys):
    from vega3d.cli import main

    assert main(["prompt-embedding", "--backbone", "mochi-1", "--weights", str(tmp_path)]) == 1
    assert "no model_index.json (expected a diffusers mochi-1 folder)" in capsys.readouterr().err


def test_random_weights_take_the_published_architecture_where_the_family_lists_none():
    from vega3d.backbones.video_dit import _config

    import diffusers

    config = _config(diffusers.MochiTransformer3DModel, None, "transformer", {"num_layers": 3})
    assert config["num_layers"] == 3 and config["num_attention_heads"] == 24 and config["attention_head_dim"] == 128
