"""The Wan2.1 backbone on tiny random-weight models of the real diffusers classes, loaded by the real loader."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vega3d import load_backbone
from vega3d.backbones.wan import dit_block_tokens, fit_frames, noise_level
from vega3d.backbones.wan_prompt import DEFAULT_PROMPT_FILE

NAMES = {"t2v": "wan2.1-t2v-1.3b", "vace": "wan2.1-vace-1.3b"}
SIZE = (32, 48)  # DiT input: 4x6 latent, 2x3 tokens
GRID = (2, 3)


@pytest.fixture(scope="module")
def frames():
    """Six smooth random frames (float in [0, 1]) at the DiT input size."""
    coarse = torch.rand(6, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    return F.interpolate(coarse, size=SIZE, mode="bilinear", align_corners=False).clamp(0, 1)


def _wan(folder, name="wan2.1-t2v-1.3b", **options):
    return load_backbone(name, str(folder), **{"size": SIZE, "grid": GRID, "block": 2, **options})


@pytest.fixture(scope="module")
def t2v(tiny_wan):
    return _wan(tiny_wan)


def _capture_dit_inputs(backbone):
    """Hooks recording the latents entering the patch embedding and the timestep entering the time embedding."""
    seen = {}
    model = backbone.transformer
    handles = [
        model.patch_embedding.register_forward_pre_hook(lambda m, a: seen.setdefault("latents", a[0].clone())),
        model.condition_embedder.timesteps_proj.register_forward_pre_hook(lambda m, a: seen.setdefault("timestep", a[0].clone())),
    ]
    return seen, handles


@pytest.mark.parametrize("kind", ["t2v", "vace"])
def test_truncated_forward_equals_hook_on_full_model(kind, tiny_wan, tiny_vace):
    from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

    folder = {"t2v": tiny_wan, "vace": tiny_vace}[kind]
    full_cls = {"t2v": WanTransformer3DModel, "vace": WanVACETransformer3DModel}[kind]
    full = full_cls.from_pretrained(str(folder / "transformer")).eval()
    backbone = _wan(folder, NAMES[kind], block=2)
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 16, 2, 4, 6, generator=generator)
    extra = {}
    if kind == "vace":
        extra["control_hidden_states"] = torch.randn(2, 96, 2, 4, 6, generator=generator)
    captured = {}
    full.blocks[2].register_forward_hook(lambda m, a, out: captured.setdefault("tokens", out))
    text = backbone.prompt_embeds
    with torch.no_grad():
        full(latents, torch.full((2,), 300.0), text.expand(2, -1, -1), **extra)
        mine = dit_block_tokens(backbone.transformer, latents, 300.0, text, block=2, control=extra.get("control_hidden_states"))
    assert mine.shape == (2, 2, 2, 3, 24)
    torch.testing.assert_close(mine.flatten(1, 3), captured["tokens"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["t2v", "vace"])
def test_only_blocks_up_to_l_are_loaded(kind, tiny_wan, tiny_vace):
    from safetensors import safe_open

    folder = {"t2v": tiny_wan, "vace": tiny_vace}[kind]
    backbone = _wan(folder, NAMES[kind], block=1)
    model = backbone.transformer
    assert len(model.blocks) == 2 and model.proj_out is None and model.norm_out is None
    if kind == "vace":  # only the control block whose hint is added before block 1 (layer 0)
        assert len(model.vace_blocks) == 1 and model.config.vace_layers == [0]
    with safe_open(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"), "pt") as reader:
        on_disk = {k: reader.get_tensor(k) for k in reader.keys()}
    loaded = model.state_dict()
    assert not any(k.startswith(("blocks.2.", "blocks.3.", "proj_out", "scale_shift_table")) for k in loaded)
    for key, value in loaded.items():
        assert torch.equal(value, on_disk[key]), key
    assert sum(v.numel() for v in loaded.values()) < 0.75 * sum(v.numel() for v in on_disk.values())


def test_noise_formula_and_timestep(t2v, frames):
    seen, handles = _capture_dit_inputs(t2v)
    try:
        t2v(frames[:2], scene_id="scene0042_00")
    finally:
        [h.remove() for h in handles]
    video = frames[:2] * 2 - 1  # frames already at SIZE: the paper preset's resize is the identity
    mean = t2v.vae.encode(video[:, :, None]).latent_dist.mean
    z0 = (mean - torch.tensor(t2v.vae.config.latents_mean).view(1, -1, 1, 1, 1)) / torch.tensor(t2v.vae.config.latents_std).view(1, -1, 1, 1, 1)
    seed = int.from_bytes(hashlib.sha256(b"vega3d-noise:0:scene0042_00").digest()[:8], "little") & (2**63 - 1)
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(seen["latents"], 0.7 * z0 + 0.3 * eps, rtol=0, atol=1e-5)
    assert seen["timestep"].tolist() == [300.0]  # embedded once, broadcast over the clips


def test_reference_timestep_selection_matches_the_released_scheduler_for_every_k():
    """All 1001 k against diffusers' UniPC flow scheduler given the released sigma grid: its int64
    timesteps, the argmin over them, and the sigma add_noise applies (the second occurrence of a timestep)."""
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler(use_flow_sigmas=True, flow_shift=5.0, prediction_type="flow_prediction")
    scheduler.set_timesteps(sigmas=np.linspace(0.999, 0.0, 1001)[:-1])
    grid = scheduler.timesteps
    assert grid.dtype == torch.int64 and len(grid) == 1000
    chosen = grid[torch.argmin((grid[None, :] - torch.arange(1001)[:, None]).abs(), dim=1)]  # per k, first on ties
    applied = scheduler.add_noise(torch.zeros(1001), torch.ones(1001), chosen)  # = the sigma it applies, per k
    ours = [noise_level(k, "reference") for k in range(1001)]
    assert [t for _, t in ours] == chosen.double().tolist()
    np.testing.assert_allclose([s for s, _ in ours], applied.double().numpy(), rtol=0, atol=1e-7)
    assert noise_level(300, "reference") == (pytest.approx(0.29992384, abs=1e-8), 299.0)
    # k = 1000: the grid's first timestep 999 occurs at several entries; the second one's sigma is used
    assert noise_level(1000, "reference")[1] == 999.0
    assert noise_level(1000, "reference")[0] < 5 * 0.999 / (1 + 4 * 0.999)
    assert noise_level(300, "paper") == (0.3, 300.0)
    with pytest.raises(ValueError, match="timestep"):
        noise_level(1001, "paper")


def test_same_seed_identical_other_seed_or_scene_different(tiny_wan, t2v, frames):
    first = t2v(frames[:3], scene_id="a")
    again = _wan(tiny_wan)(frames[:3], scene_id="a")  # a fresh load: bit-identical across runs
    assert torch.equal(first, again)
    assert not torch.allclose(first, t2v(frames[:3], scene_id="b"))
    t2v.set_options(seed=1)
    try:
        assert not torch.allclose(first, t2v(frames[:3], scene_id="a"))
    finally:
        t2v.set_options(seed=0)


def test_chunking_does_not_change_features(tiny_wan, t2v, frames):
    torch.testing.assert_close(_wan(tiny_wan, chunk_frames=1)(frames, scene_id="s"), t2v(frames, scene_id="s"), rtol=0, atol=1e-5)


def test_noise_samples_are_averaged(t2v, frames):
    t2v.set_options(num_noise_samples=2)
    try:
        averaged = t2v(frames[:2], scene_id="s")
        eps = t2v._noise((2, 3, 1, *SIZE), "s")
        z0 = t2v._latents(frames[:2, :, None] * 2 - 1)
        expected = sum(t2v._pooled_tokens(0.7 * z0 + 0.3 * e, 300.0, None) for e in eps) / 2
    finally:
        t2v.set_options(num_noise_samples=1)
    torch.testing.assert_close(averaged, expected[:, 0], rtol=0, atol=1e-6)
    assert not torch.allclose(averaged, t2v(frames[:2], scene_id="s"))


def test_clip_mode_keeps_every_frame(tiny_wan, frames):
    clip = _wan(tiny_wan, frame_mode="clip")
    tokens = clip(frames, scene_id="s")  # 6 frames -> padded to 9 = 4*2+1 -> 3 latent frames
    assert tokens.shape == (6, *GRID, 24)
    for i in (2, 3, 4):  # frames 1-4 share latent frame 1
        assert torch.equal(tokens[i], tokens[1])
    assert not torch.allclose(tokens[5], tokens[4]) and not torch.allclose(tokens[0], tokens[1])
    changed = frames.clone()
    changed[5] = 1 - changed[5]  # the last frame reaches the DiT: it is not dropped
    assert not torch.allclose(clip(changed, scene_id="s")[5], tokens[5])
    assert clip(frames[:5], scene_id="s").shape[0] == 5  # 4n+1 needs no padding


def test_reference_preset_crops_the_middle_like_the_released_code():
    square = torch.rand(2, 3, 24, 24)
    cropped = fit_frames(square, (16, 32), "reference")  # covers 32x32, keeps rows 8..24
    upsampled = F.interpolate(square, size=(32, 32), mode="bilinear", align_corners=False)  # released: no antialias
    assert torch.equal(cropped, upsampled[..., 8:24, :])
    whole = fit_frames(square, (16, 32), "paper")
    assert torch.equal(whole, F.interpolate(square, size=(16, 32), mode="bilinear", align_corners=False, antialias=True))


def test_reference_preset_ignores_rows_outside_the_crop_paper_keeps_them(tiny_wan, frames):
    square = F.interpolate(frames[:2], size=(48, 48), mode="bilinear", align_corners=False)  # as 384x384 inputs
    banded = square.clone()
    banded[:, :, :4] = 1.0  # top rows: outside the reference crop (48x48 covers 32x48 as is, keeps rows 8..40)
    reference = _wan(tiny_wan, preset="reference")
    assert torch.equal(reference(banded, scene_id="s"), reference(square, scene_id="s"))
    paper = _wan(tiny_wan)
    assert not torch.allclose(paper(banded, scene_id="s")[:, 0], paper(square, scene_id="s")[:, 0])


def test_vace_control_matches_diffusers_pipeline(tiny_vace, frames):
    from diffusers import WanVACEPipeline

    backbone = _wan(tiny_vace, NAMES["vace"], block=3)
    pipeline = WanVACEPipeline(tokenizer=None, text_encoder=None, vae=backbone.vae, scheduler=None, transformer=backbone.transformer)
    reference = frames[0] * 2 - 1
    video = torch.zeros(1, 3, 1, *SIZE)  # no control video: the pipeline's default
    mask = torch.ones_like(video)
    with torch.no_grad():
        expected = torch.cat([pipeline.prepare_video_latents(video, mask, [[reference]], device=torch.device("cpu")),
                              pipeline.prepare_masks(mask, [[reference]])], dim=1)
        z0 = backbone._latents(frames[1:2, :, None] * 2 - 1)
        ref = backbone._latents(reference[None, :, None])
        latents, control = backbone._vace_inputs(z0, ref)
    torch.testing.assert_close(control, expected, rtol=0, atol=1e-5)
    assert torch.equal(latents[:, :, 0], ref[:, :, 0]) and torch.equal(latents[:, :, 1], z0[:, :, 0])
    tokens = backbone(frames[:2], scene_id="s")
    assert tokens.shape == (2, *GRID, 24) and torch.isfinite(tokens).all()


_TO_ORIGINAL = [("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
                ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
                ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
                ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
                ("condition_embedder.time_proj", "time_projection.1"), ("attn1", "self_attn"), ("attn2", "cross_attn"),
                (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."),
                ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"), (".norm2.", ".norm3."),
                ("scale_shift_table", "modulation"), (".proj_in.", ".before_proj."), (".proj_out.", ".after_proj.")]


def _original_name(key: str) -> str:
    """Diffusers key -> original Wan checkpoint key (the inverse of diffusers' converter)."""
    if key.startswith("proj_out."):
        return key.replace("proj_out.", "head.head.")
    if key == "scale_shift_table":
        return "head.modulation"
    for new, old in _TO_ORIGINAL:
        key = key.replace(new, old)
    return key


@pytest.mark.parametrize("kind", ["t2v", "vace"])
def test_single_file_original_checkpoint_loads_through_diffusers_converter(kind, tiny_wan, tiny_vace, tmp_path, frames):
    from safetensors.torch import load_file, save_file

    folder = {"t2v": tiny_wan, "vace": tiny_vace}[kind]
    state = load_file(str(folder / "transformer" / "diffusion_pytorch_model.safetensors"))
    original = {_original_name(k): v for k, v in state.items()}
    assert "head.head.weight" in original and "blocks.0.self_attn.q.weight" in original
    checkpoint = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file(original, str(checkpoint))
    (tmp_path / "config.json").write_text(json.dumps({"dim": 24, "num_heads": 2, "num_layers": 4}))
    options = dict(vae=str(folder / "vae"), prompt_embedding=str(folder / DEFAULT_PROMPT_FILE))
    from_file = _wan(checkpoint, NAMES[kind], **options)
    from_folder = _wan(folder, NAMES[kind])
    assert from_file.weights_label == str(checkpoint.resolve())
    assert from_file.transformer.config.num_layers == 3 and from_file.total_blocks == 4
    mine, theirs = from_file.transformer.state_dict(), from_folder.transformer.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert torch.equal(from_file(frames[:2], scene_id="s"), from_folder(frames[:2], scene_id="s"))


def test_sweeps_reuse_the_loaded_model(tiny_wan, frames):
    backbone = _wan(tiny_wan, block=3)
    backbone.set_options(block=1, timestep=500)
    expected = _wan(tiny_wan, block=1, timestep=500)(frames[:2], scene_id="s")
    assert torch.equal(backbone(frames[:2], scene_id="s"), expected)
    assert backbone.config()["block"] == 1 and backbone.config()["timestep"] == 500
    shallow = _wan(tiny_wan, block=1)
    with pytest.raises(ValueError, match=r"block=2 was not loaded.*blocks 0\.\.1"):
        shallow.set_options(block=2)
    with pytest.raises(ValueError, match="cannot change"):
        shallow.set_options(preset="reference")
    with pytest.raises(ValueError, match=r"blocks 0\.\.3"):
        _wan(tiny_wan, block=4)


def test_labels_and_config_record_what_determines_features(t2v):
    assert t2v.has_weights and t2v.weights_label.startswith("RANDOM WEIGHTS (untrained, for tests)")
    config = t2v.config()
    assert config["prompt_embedding"].startswith(DEFAULT_PROMPT_FILE + "@sha256:")
    assert {k: config[k] for k in ("timestep", "block", "grid", "size", "frame_mode", "preset", "seed")} == {
        "timestep": 300, "block": 2, "grid": list(GRID), "size": list(SIZE), "frame_mode": "per_frame", "preset": "paper", "seed": 0}
    random = load_backbone("wan2.1-t2v-1.3b", "random", transformer_config=dict(num_layers=2, num_attention_heads=2, attention_head_dim=12,
                           ffn_dim=32, text_dim=16, freq_dim=16), vae_config=dict(base_dim=8, num_res_blocks=1), block=1, size=SIZE)
    assert random.weights_label == "RANDOM WEIGHTS (untrained, for tests)"


def test_bf16_keeps_rope_and_fp32_modules(tiny_wan, frames, t2v):
    half = _wan(tiny_wan, dtype="bfloat16")
    model = half.transformer
    assert model.rope.freqs_cos.dtype == t2v.transformer.rope.freqs_cos.dtype  # RoPE tables untouched
    assert model.blocks[0].scale_shift_table.dtype == torch.float32
    assert model.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert model.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    tokens = half(frames[:2], scene_id="s")
    reference = t2v(frames[:2], scene_id="s")
    assert tokens.dtype == torch.float32
    assert F.cosine_similarity(tokens.flatten(), reference.flatten(), dim=0) > 0.98


def test_prompt_embedding_file_is_the_eos_row_then_zero_padding(tiny_wan):
    from safetensors.torch import load_file
    from transformers import UMT5EncoderModel

    embeds = load_file(str(tiny_wan / DEFAULT_PROMPT_FILE))["prompt_embeds"]
    assert embeds.shape == (1, 512, 16)
    encoder = UMT5EncoderModel.from_pretrained(str(tiny_wan / "text_encoder")).eval()
    with torch.no_grad():
        eos = encoder(torch.tensor([[1]]), attention_mask=torch.tensor([[1]])).last_hidden_state[0, 0]
    torch.testing.assert_close(embeds[0, 0], eos, rtol=0, atol=1e-5)
    assert embeds[0, 1:].abs().max() == 0


def test_clear_errors(tiny_wan, tmp_path):
    from safetensors.torch import save_file

    wrong = tmp_path / "short.safetensors"
    save_file({"prompt_embeds": torch.zeros(1, 77, 16)}, str(wrong))
    with pytest.raises(ValueError, match=r"short.safetensors.*\(1, 77, 16\).*vega3d prompt-embedding"):
        _wan(tiny_wan, prompt_embedding=str(wrong))
    with pytest.raises(FileNotFoundError, match="missing.safetensors: no such file.*vega3d prompt-embedding"):
        _wan(tiny_wan, prompt_embedding=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="multiples of 16"):
        _wan(tiny_wan, size=(30, 48))
    with pytest.raises(ValueError, match="frame_mode"):
        _wan(tiny_wan, frame_mode="video")
    with pytest.raises(FileNotFoundError, match="neither a diffusers folder"):
        _wan(tmp_path)


def test_store_keys_on_the_backbone_configuration(t2v, frames, tmp_path):
    from vega3d.scenes import SceneFrames
    from vega3d.store import FeatureStore, encode_scene

    scene = SceneFrames("scene0007_00", [0, 4, 9], ["0", "4", "9"], frames[:3], torch.zeros(3, 2, 2, 3),
                        torch.ones(3, 2, 2, dtype=torch.bool), SIZE)
    store = FeatureStore(tmp_path)
    tokens = encode_scene(t2v, scene, store)
    assert torch.equal(FeatureStore(tmp_path).load("scene0007_00", t2v.config(), [0, 4, 9]), tokens)
    t2v.set_options(timestep=500)  # a sweep step is another configuration: never served the old tokens
    try:
        assert not store.contains("scene0007_00", t2v.config(), [0, 4, 9])
        assert not torch.allclose(encode_scene(t2v, scene, store), tokens)
    finally:
        t2v.set_options(timestep=300)
    assert len(list(tmp_path.glob("*/*.safetensors"))) == 2


def test_extract_command_passes_wan_options(tiny_wan, synthetic_scene, tmp_path):
    from vega3d.cli import main
    from vega3d.store import FeatureStore

    assert main(["extract", str(synthetic_scene), "--backbone", "wan2.1-t2v-1.3b", "--weights", str(tiny_wan),
                 "--out", str(tmp_path), "--frames", "2", "--image-size", "32", "48", "--size", "32", "48", "--grid", "2", "3",
                 "--block", "1", "--timestep", "500", "--frame-mode", "clip", "--option", "chunk_frames=1"]) == 0
    config = json.loads(next(tmp_path.glob("*/config.json")).read_text())
    assert (config["block"], config["timestep"], config["grid"], config["frame_mode"]) == (1, 500, [2, 3], "clip")
    assert config["weights"].startswith("RANDOM WEIGHTS (untrained, for tests)")
    entry = json.loads((tmp_path / "index.json").read_text())["entries"][0]
    tokens = FeatureStore(tmp_path).load(synthetic_scene.name, config, entry["frame_indices"])
    assert tokens.shape == (2, 2, 3, 24)


def test_awareness_sweep_through_the_store(tiny_wan, synthetic_scene, tmp_path):
    from vega3d.cli import main

    command = ["awareness", str(synthetic_scene), "--backbone", "wan2.1-t2v-1.3b", "--weights", str(tiny_wan),
               "--frames", "3", "--plots", "0", "--grid", "2,3", "--option", "size=[32,48]", "--option", "block=1",
               "--timesteps", "100,300", "--store", str(tmp_path / "store")]
    assert main([*command, "--out", str(tmp_path / "first")]) == 0
    stored = sorted(tmp_path.glob("store/*/*.safetensors"))
    timesteps = sorted(json.loads(p.with_name("config.json").read_text())["timestep"] for p in stored)
    assert timesteps == [100, 300]  # one configuration per sweep step
    before = [p.stat().st_mtime_ns for p in stored]
    assert main([*command, "--out", str(tmp_path / "second")]) == 0
    assert [p.stat().st_mtime_ns for p in stored] == before  # read back, not rewritten
    first, second = ((tmp_path / run / "leaderboard.md").read_text() for run in ("first", "second"))
    assert first.count("RANDOM WEIGHTS") >= 2 and "RANDOM WEIGHTS" in second


_RESIDUAL_TO_ORIGINAL = [(".norm1.", ".residual.0."), (".conv1.", ".residual.2."), (".norm2.", ".residual.3."),
                         (".conv2.", ".residual.6."), (".conv_shortcut.", ".shortcut.")]
_VAE_TO_ORIGINAL = [("encoder.conv_in.", "encoder.conv1."), ("encoder.norm_out.", "encoder.head.0."),
                    ("encoder.conv_out.", "encoder.head.2."), ("encoder.mid_block.resnets.0.", "encoder.middle.0."),
                    ("encoder.mid_block.attentions.0.", "encoder.middle.1."), ("encoder.mid_block.resnets.1.", "encoder.middle.2."),
                    ("encoder.down_blocks.", "encoder.downsamples."), ("quant_conv.", "conv1.")]


def _original_vae_name(key: str) -> str:
    """Diffusers VAE encoder key -> original ``Wan2.1_VAE.pth`` key (the inverse of diffusers' converter)."""
    if key.startswith(("encoder.down_blocks.", "encoder.mid_block.resnets.")):
        for new, old in _RESIDUAL_TO_ORIGINAL:
            key = key.replace(new, old)
    for new, old in _VAE_TO_ORIGINAL:
        key = key.replace(new, old) if key.startswith(new) else key
    return key


def test_original_vae_pth_loads_encoder_only_through_diffusers_converter(tiny_wan, tmp_path, frames):
    from safetensors.torch import load_file

    state = load_file(str(tiny_wan / "vae" / "diffusion_pytorch_model.safetensors"))
    original = {_original_vae_name(k): v for k, v in state.items() if k.startswith(("encoder.", "quant_conv."))}
    assert "encoder.downsamples.0.residual.2.weight" in original and "conv1.weight" in original
    torch.save(original, tmp_path / "Wan2.1_VAE.pth")  # the original release's format (a plain state dict)
    from_pth = _wan(tiny_wan, vae=str(tmp_path / "Wan2.1_VAE.pth"))
    from_folder = _wan(tiny_wan)
    assert from_pth.vae.decoder is None and from_folder.vae.decoder is None and from_folder.vae.post_quant_conv is None
    mine, theirs = from_pth.vae.state_dict(), from_folder.vae.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert torch.equal(from_pth(frames[:2], scene_id="s"), from_folder(frames[:2], scene_id="s"))
