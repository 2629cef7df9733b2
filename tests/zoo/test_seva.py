"""SEVA / Vmem: cameras from the scene, Plücker rays by hand, the UNet blocks against diffusers, noise, loading."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from vega3d.backbones import load_backbone
from vega3d.backbones.checkpoints import WeightsError
from vega3d.backbones.registry import RANDOM_WEIGHTS_LABEL
from vega3d.backbones.seva import edm_sigma, input_frame_indices, normalize_cameras, plucker_rays
from vega3d.backbones.unet_camera import CameraResBlock, SevaConfig, SevaInputBlocks, TimeMixBlock, to_published
from vega3d.scenes import Cameras, load_scene, resize_center_crop, sample_frames

K = torch.tensor([[30.0, 0, 24], [0, 30.0, 20], [0, 0, 1]], dtype=torch.float64)


def _cameras(t=3, size=(40, 48), coverage=None):
    poses = torch.eye(4, dtype=torch.float64).repeat(t, 1, 1)
    poses[:, 0, 3] = torch.arange(t, dtype=torch.float64) * 0.5 + 1.0
    return Cameras(poses, K.expand(t, 3, 3), size, depth_coverage=coverage)


@pytest.fixture(scope="module")
def seva(load_tiny):
    return load_tiny("seva")


@pytest.fixture(scope="module")
def vmem(load_tiny):
    return load_tiny("vmem")


def test_seva_and_vmem_through_the_real_loader(seva, vmem, frames):
    for backbone, timestep in ((seva, 700), (vmem, 300)):
        tokens = backbone(frames, scene_id="s", cameras=_cameras())
        assert tokens.shape == (3, 14, 14, 128) and torch.isfinite(tokens).all()
        assert backbone.weights_label == RANDOM_WEIGHTS_LABEL and backbone.timestep == timestep
        assert torch.equal(tokens, backbone(frames, scene_id="s", cameras=_cameras()))
    assert backbone.weight_file.name == "vmem_weights.pth"  # the published pickle, "module." prefixed
    with pytest.raises(ValueError, match="camera-conditioned: pass cameras="):
        backbone(frames)
    with pytest.raises(ValueError, match="2 cameras for 3 frames"):
        backbone(frames, cameras=_cameras(2))


def test_noise_index_seed_and_clean_input_frames(seva, frames):
    cams = _cameras()
    base = seva(frames, scene_id="s", cameras=cams)
    try:
        assert not torch.allclose(seva.set_options(timestep=250)(frames, scene_id="s", cameras=cams), base)
        assert not torch.allclose(seva.set_options(timestep=700, seed=1)(frames, scene_id="s", cameras=cams), base)
        # With every frame an input frame nothing is noised: the seed no longer matters.
        seva.set_options(num_input_frames=3)
        torch.testing.assert_close(seva(frames, scene_id="a", cameras=cams), seva.set_options(seed=5)(frames, scene_id="b", cameras=cams))
        with pytest.raises(ValueError, match=r"timestep must be an integer noise index in \[0, 999\]"):
            seva.set_options(timestep=1000)
    finally:
        seva.set_options(timestep=700, seed=0, num_input_frames=None)


def test_noise_levels_match_the_released_schedule():
    for k, sigma, c_in in ((250, 3.11448, 0.305709), (300, 4.0667, 0.23879), (700, 19.8604, 0.050288)):
        assert edm_sigma(k) == pytest.approx(sigma, abs=1e-4)
        assert 1 / math.sqrt(edm_sigma(k) ** 2 + 1) == pytest.approx(c_in, abs=1e-5)


def test_plucker_rays_by_hand():
    """Camera 0 at the origin; camera 1 at (1, 0, 0) turned 90 degrees about y; K with f = 2, c = (1, 1)."""
    k = torch.tensor([[2.0, 0, 1], [0, 2.0, 1], [0, 0, 1]], dtype=torch.float64)
    turn = torch.tensor([[0.0, 0, 1, 1], [0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
    rays = plucker_rays(torch.stack([torch.eye(4, dtype=torch.float64), turn]), k.expand(2, 3, 3), (2, 2))
    assert rays.shape == (2, 6, 2, 2)
    # Pixel (u, v) = (0, 0), centre (0.5, 0.5): K^-1 -> (-0.25, -0.25, 1).
    d0 = np.array([-0.25, -0.25, 1.0]) / np.linalg.norm([-0.25, -0.25, 1.0])
    np.testing.assert_allclose(rays[0, :3, 0, 0], d0, atol=1e-6)
    np.testing.assert_allclose(rays[0, 3:, 0, 0], 0.0, atol=1e-6)  # origin at 0: no moment
    # Camera 1, pixel (u, v) = (1, 0): K^-1 (1.5, 0.5, 1) = (0.25, -0.25, 1), rotated: (z, y, -x) = (1, -0.25, -0.25).
    d1 = np.array([1.0, -0.25, -0.25]) / np.linalg.norm([1.0, -0.25, -0.25])
    np.testing.assert_allclose(rays[1, :3, 0, 1], d1, atol=1e-6)
    np.testing.assert_allclose(rays[1, 3:, 0, 1], np.cross([1.0, 0, 0], d1), atol=1e-6)


def test_camera_normalisation_ignores_outliers_and_puts_camera_0_at_2():
    poses = torch.eye(4, dtype=torch.float64).repeat(40, 1, 1)
    poses[:, :3, 3] = torch.randn(40, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    poses[5, :3, 3] = 1e4  # far beyond 10 x the 97th percentile distance
    out = normalize_cameras(poses)
    inliers = [i for i in range(40) if i != 5]
    centred = poses[:, :3, 3] - poses[inliers, :3, 3].mean(0)
    torch.testing.assert_close(out[:, :3, 3], centred * 2 / centred[0].norm())
    assert float(out[0, :3, 3].norm()) == pytest.approx(2.0)
    torch.testing.assert_close(out[:, :3, :3], poses[:, :3, :3])


def test_resize_center_crop_moves_the_intrinsics():
    frames = torch.rand(3, 3, 40, 48)
    pixels, cams = resize_center_crop(frames, (20, 20), _cameras())
    assert pixels.shape == (3, 3, 20, 20) and cams.image_size == (20, 20)
    # Scale 0.5 (40 -> 20, 48 -> 24), then 2 columns cropped on the left.
    torch.testing.assert_close(cams.intrinsics[0], torch.tensor([[15.0, 0, 10], [0, 15.0, 10], [0, 0, 1]], dtype=torch.float64))


def test_input_frames_by_depth_coverage_or_uniform():
    cams = _cameras(6, coverage=torch.tensor([0.1, 0.9, 0.5, 0.9, 0.2, 0.7], dtype=torch.float64))
    assert input_frame_indices(cams, 3, "depth") == [1, 3, 5]
    assert input_frame_indices(cams, 3, "uniform") == [0, 2, 5]
    assert input_frame_indices(_cameras(6), 3, "depth") == [0, 2, 5]  # no coverage known: uniform


def test_scene_frames_carry_poses_and_resized_intrinsics(tabletop_scene):
    scene = load_scene(tabletop_scene)
    frames = sample_frames(scene, num_frames=3, image_size=(64, 80))
    height, width = scene.color(0).shape[:2]
    cams = frames.cameras
    torch.testing.assert_close(cams.cam_to_world[1], torch.from_numpy(scene.pose(frames.frame_indices[1])))
    expected = torch.from_numpy(scene.color_intrinsic[:3, :3]) * torch.tensor([[80 / width], [64 / height], [1.0]], dtype=torch.float64)
    torch.testing.assert_close(cams.intrinsics[2], expected)
    torch.testing.assert_close(cams.depth_coverage, frames.valid.flatten(1).double().mean(1))


def test_camera_resblock_is_diffusers_resnet_plus_the_plucker_film():
    from diffusers.models.resnet import ResnetBlock2D

    torch.manual_seed(0)
    ours = CameraResBlock(32, 64, time_dim=16, dense_in=6)
    theirs = ResnetBlock2D(in_channels=32, out_channels=64, temb_channels=16, groups=32, eps=1e-5)
    names = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
             "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    theirs.load_state_dict({k: ours.state_dict()[f"{names[k.split('.')[0]]}.{k.split('.')[1]}"] for k in theirs.state_dict()})
    x, emb, dense = torch.randn(2, 32, 8, 8), torch.randn(2, 16), torch.randn(2, 6, 4, 4)
    with torch.no_grad():
        film = ours(x, emb, dense)
        ours.dense_emb_layers[0].weight.zero_()
        ours.dense_emb_layers[0].bias.zero_()
        torch.testing.assert_close(ours(x, emb, dense), theirs(x, emb), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(film, theirs(x, emb))


def test_time_mix_is_diffusers_temporal_block_without_its_last_residual():
    from diffusers.models.attention import TemporalBasicTransformerBlock

    torch.manual_seed(0)
    ours = TimeMixBlock(64, head_dim=32, context_dim=16)
    theirs = TemporalBasicTransformerBlock(64, 64, 2, 32, cross_attention_dim=16)
    theirs.load_state_dict(ours.state_dict())  # same tensor names
    b, t, s = 1, 3, 4
    x, context = torch.randn(b * t, s, 64), torch.randn(b * s, 1, 16)
    before_ff = []
    theirs.norm3.register_forward_pre_hook(lambda _m, args: before_ff.append(args[0]))
    with torch.no_grad():
        full = theirs(x, num_frames=t, encoder_hidden_states=context)  # [(b t), s, c], ends with ff + residual
        per_pixel = x.reshape(b, t, s, 64).permute(0, 2, 1, 3).reshape(b * s, t, 64)
        mine = ours(per_pixel, context).reshape(b, s, t, 64).permute(0, 2, 1, 3).reshape(b * t, s, 64)
    residual = before_ff[0].reshape(b, s, t, 64).permute(0, 2, 1, 3).reshape(b * t, s, 64)
    torch.testing.assert_close(mine, full - residual, atol=1e-5, rtol=1e-5)


def test_time_embedding_and_downsample_from_published_tensors():
    torch.manual_seed(0)
    unet = SevaInputBlocks(SevaConfig(model_channels=64, channel_mult=(1, 1, 2, 2), context_dim=32, time_dim=256))
    state = to_published(unet.state_dict())
    t = torch.tensor([0, 250, 700])
    freqs = torch.exp(-math.log(1e4) * torch.arange(32) / 32)
    sinusoid = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    hidden = F.silu(F.linear(sinusoid, state["time_embed.0.weight"], state["time_embed.0.bias"]))
    expected = F.linear(hidden, state["time_embed.2.weight"], state["time_embed.2.bias"])
    with torch.no_grad():
        torch.testing.assert_close(unet.time_embed(unet.time_proj(t)), expected, atol=1e-5, rtol=1e-5)
        x = torch.randn(2, 64, 8, 8)
        down = F.conv2d(x, state["input_blocks.3.0.op.weight"], state["input_blocks.3.0.op.bias"], stride=2, padding=1)
        torch.testing.assert_close(unet.input_blocks[3][0](x), down)


def test_strict_loading_errors_and_later_parts_dropped(seva, tiny_weights, tmp_path, frames):
    state = load_file(f"{tiny_weights('seva')}/modelv1.1.safetensors")
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "input_blocks.7.0.skip_connection.weight"},
                    r"the seva UNet input blocks .*1 missing \(input_blocks\.7\.0\.skip_connection\.weight\)"),
        "unexpected": ({**state, "label_emb.0.weight": torch.zeros(1)}, r"1 unexpected \(label_emb\.0\.weight\)"),
        "not_seva": ({"x": torch.zeros(1)}, r"not a SEVA/Vmem UNet \(no tensor input_blocks\.0\.0\.weight\)"),
    }
    for name, (broken, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        save_file(broken, str(folder / "model.safetensors"))
        with pytest.raises(WeightsError, match=rf"{name}/model\.safetensors: .*{message}"):
            load_backbone("seva", weights=str(folder), vae=f"{tiny_weights('seva')}/vae",
                          image_encoder=f"{tiny_weights('seva')}/image_encoder", resolution=128)
    whole = tmp_path / "whole.safetensors"
    save_file({**state, "middle_block.0.in_layers.0.weight": torch.zeros(1), "out.2.weight": torch.zeros(1)}, str(whole))
    backbone = load_backbone("seva", weights=str(whole), vae=f"{tiny_weights('seva')}/vae",
                             image_encoder=f"{tiny_weights('seva')}/image_encoder", resolution=128)
    torch.testing.assert_close(backbone(frames, cameras=_cameras()), seva(frames, cameras=_cameras()))


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_vmem_pickle_never_runs_code_and_converts_once(vmem, tiny_weights, tmp_path, frames, capsys):
    from vega3d.cli import main

    evil = tmp_path / "vmem_weights.pth"
    evil.write_bytes(pickle.dumps({"input_blocks.0.0.weight": _Payload()}, protocol=2))
    with pytest.raises(WeightsError, match=r"vmem_weights\.pth: cannot be read as plain tensors with weights_only=True .*never unpickles code"):
        load_backbone("vmem", weights=str(tmp_path))
    assert "code ran" not in capsys.readouterr().out

    folder = tmp_path / "vmem"
    folder.mkdir()
    (folder / "vmem_weights.pth").write_bytes(vmem.weight_file.read_bytes())
    assert main(["convert-weights", str(folder / "vmem_weights.pth")]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["convert-weights", str(folder / "vmem_weights.pth")]) == 1  # never overwritten
    assert "already exists" in capsys.readouterr().err
    assert main(["convert-weights", str(folder / "vmem_weights.safetensors")]) == 1
    assert "not a pickled checkpoint" in capsys.readouterr().err
    assert main(["convert-weights", str(evil), "--out", str(tmp_path / "evil.safetensors")]) == 1
    assert "weights_only=True" in capsys.readouterr().err and not (tmp_path / "evil.safetensors").exists()
    converted = load_backbone("vmem", weights=str(folder), vae=f"{tiny_weights('vmem')}/vae",
                              image_encoder=f"{tiny_weights('vmem')}/image_encoder", resolution=128)
    assert converted.weight_file.name == "vmem_weights.safetensors"
    torch.testing.assert_close(converted(frames, cameras=_cameras()), vmem(frames, cameras=_cameras()))


def test_full_size_key_set_and_shapes_on_meta():
    with torch.device("meta"):
        unet = SevaInputBlocks(SevaConfig())
    published = {k: tuple(v.shape) for k, v in to_published(unet.state_dict()).items()}
    assert len(published) == 424 and sum(p.numel() for p in unet.parameters()) == 392_398_400
    assert published["input_blocks.0.0.weight"] == (320, 11, 3, 3)
    assert published["time_embed.0.weight"] == (1280, 320) and published["time_embed.2.weight"] == (1280, 1280)
    assert published["input_blocks.11.0.dense_emb_layers.0.weight"] == (2560, 6, 1, 1)
    assert published["input_blocks.7.1.time_mix_blocks.0.attn2.to_k.weight"] == (1280, 1024)
    assert published["input_blocks.4.0.skip_connection.weight"] == (640, 320, 1, 1)
    assert "input_blocks.5.0.skip_connection.weight" not in published and "input_blocks.10.1.norm.weight" not in published
    assert published["input_blocks.9.0.op.weight"] == (1280, 1280, 3, 3)
    assert SevaConfig.from_state_dict(to_published(unet.state_dict()), "x") == SevaConfig()


def test_cameras_reject_bad_shapes_and_non_finite_poses():
    with pytest.raises(ValueError, match=r"cam_to_world \[T, 4, 4\] and intrinsics \[T, 3, 3\]; got \(2, 4, 4\) and \(3, 3, 3\)"):
        Cameras(torch.eye(4).repeat(2, 1, 1), K.expand(3, 3, 3), (40, 48))
    poses = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    poses[1, 0, 3] = float("inf")
    with pytest.raises(ValueError, match="non-finite poses"):
        Cameras(poses, K.expand(2, 3, 3), (40, 48))
    with pytest.raises(ValueError, match=r"depth_coverage must be \[T=2\]"):
        Cameras(torch.eye(4).repeat(2, 1, 1), K.expand(2, 3, 3), (40, 48), depth_coverage=torch.ones(3))
