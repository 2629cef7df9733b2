"""Every open video DiT in diffusers as a latent world simulator: one feature path, a small adapter per family.

frames [T, 3, H, W] in [0, 1]
  -> resized to the family's input size (whole field of view), in [-1, 1]
  -> frame packing (``per_frame``: T one-frame clips; ``clip``: one (r n + 1)-frame video, r = the VAE's
     temporal compression, the last frame repeated so no frame is dropped)
  -> VAE posterior mean, normalised the family's way (``latent_norm``)
  -> noised at level t = k / 1000 by the family's own rule (``noise``), eps seeded from (seed, scene id)
  -> blocks 0..l of the DiT only (the model is built with l + 1 blocks; a hook reads block l's video tokens)
  -> adaptive average pooling to ``grid`` -> [T, h, w, C]

Noise rules (``z0`` the normalised latent, ``eps`` the seeded draw, ``k`` the ``timestep`` option):
- ``flow``: z = (1 - s) z0 + s eps with s = k / 1000; the DiT sees timestep 1000 s (rectified flow, as
  FlowMatchEulerDiscreteScheduler.scale_noise: HunyuanVideo, LTX-Video, Wan).
- ``flow_inverted`` (Mochi): the same z; the DiT is conditioned on 1000 (1 - s), Mochi's reversed clock.
- ``ddpm`` (CogVideoX, v-prediction DDIM training): z = sqrt(a_k) z0 + sqrt(1 - a_k) eps with a_k the
  scheduler's (SNR-shifted, zero-terminal-SNR) cumulative alpha at training step min(k, 999); the DiT sees k.
Schedule shifts only respace *sampling* steps; a feature read at one noise level needs none, so ``k`` means
the same fraction of noise for every flow family (k = 300: 30 % noise, the paper's Wan setting).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from vega3d.backbones.registry import (RANDOM_WEIGHTS_LABEL, RANDOM_WEIGHTS_MARKER, Backbone, is_random_weights,
                                       parse_dtype, parse_grid, register_backbone)

FRAME_MODES = ("per_frame", "clip")
NOISE_RULES = ("flow", "flow_inverted", "ddpm")
NUM_TRAIN_TIMESTEPS = 1000


# -- the parts every video DiT shares (Wan uses them too) ----------------------------------------------


def clip_latent_index(num_frames: int, temporal_ratio: int = 4) -> list[int]:
    """Latent frame of each input frame of an (r n + 1)-frame clip: frame 0 alone, then groups of r."""
    return [(i + temporal_ratio - 1) // temporal_ratio for i in range(num_frames)]


def pack_frames(video: torch.Tensor, frame_mode: str, temporal_ratio: int):
    """``[T, 3, H, W]`` -> (clips ``[B, 3, F, H, W]``, (clip, latent frame) of each input frame).

    ``per_frame``: every frame its own one-frame clip. ``clip``: one video, the last frame repeated up to
    r n + 1 frames (a causal video VAE drops trailing frames otherwise).
    """
    if frame_mode not in FRAME_MODES:
        raise ValueError(f"frame_mode must be one of {FRAME_MODES}; got {frame_mode!r}")
    if frame_mode == "per_frame":
        return video[:, :, None], [(i, 0) for i in range(len(video))]
    padding = (-(len(video) - 1)) % temporal_ratio
    clip = torch.cat([video, video[-1:].expand(padding, -1, -1, -1)]) if padding else video
    return clip.transpose(0, 1)[None], [(0, j) for j in clip_latent_index(len(video), temporal_ratio)]


def noise_seed(seed: int, scene_id: str | None) -> int:
    """A 63-bit seed from (global seed, scene id) via SHA-256: stable across runs, ranks and Python versions."""
    digest = hashlib.sha256(f"vega3d-noise:{int(seed)}:{scene_id or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seeded_noise(shape, seed: int, scene_id: str | None, num_samples: int) -> list[torch.Tensor]:
    """``num_samples`` draws of eps on the CPU generator seeded from (seed, scene id): device-independent."""
    generator = torch.Generator("cpu").manual_seed(noise_seed(seed, scene_id))
    return [torch.randn(tuple(shape), generator=generator) for _ in range(num_samples)]


def pool_tokens(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[B, F, h, w, C]`` block tokens -> ``[B, F, *grid, C]`` (adaptive average pooling, float32)."""
    batch, frames, height, width, channels = tokens.shape
    flat = tokens.float().reshape(batch * frames, height, width, channels).permute(0, 3, 1, 2)
    return F.adaptive_avg_pool2d(flat, grid).permute(0, 2, 3, 1).reshape(batch, frames, *grid, channels)


def fit_size(size, multiple: int) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < multiple or width < multiple or height % multiple or width % multiple:
        raise ValueError(f"size must be (height, width), multiples of {multiple} (VAE compression x patch); got {size}")
    return height, width


# -- one family = one adapter ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DiTFamily:
    """What is particular to one video DiT family; the feature path itself is :class:`VideoDiTBackbone`."""

    name: str
    description: str
    hub_id: str
    licence: str
    transformer: str  # diffusers class name
    vae: str
    pipeline: str  # diffusers pipeline class (prompt encoding)
    block_lists: tuple[str, ...]  # attribute names of the block lists, in the order they run
    layer_keys: tuple[str, ...]  # the config key that counts each list's blocks
    noise: str  # one of NOISE_RULES
    latent_norm: str  # "scale": mu * s; "mean_std": (mu - m) / sd; "mean_std_scale": (mu - m) s / sd
    size: tuple[int, int]  # native input size (height, width)
    text_rows: int  # prompt embedding rows (its pipeline's max_sequence_length), unless ``text_keys[0]`` sets it
    text_keys: tuple[str | None, str]  # transformer config keys of the prompt rows (or None) and width
    architecture: dict  # the published transformer config (random weights, meta-device counts)
    vae_architecture: dict = field(default_factory=dict)
    frames_first: bool = False  # the transformer takes [B, F, C, H, W] (CogVideoX)
    packed: bool = False  # the transformer takes [B, F*H*W, C] tokens (LTX-Video)
    pooled_key: str | None = None  # config key of a pooled text projection input (HunyuanVideo)
    masked_text: bool = True  # the transformer takes the prompt's attention mask
    scheduler: dict = field(default_factory=dict)  # ddpm rule: CogVideoXDDIMScheduler config
    extra_inputs: Callable | None = None  # (backbone, latents [B, C, F, H, W]) -> extra forward kwargs


def _cogvideox_rotary(backbone, latents):
    """CogVideoX 1.0 (5B): 3-D rotary tables over the latent grid, cropped as its pipeline crops them."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    config = backbone.transformer.config
    if not config.use_rotary_positional_embeddings:
        return {}
    grid = (latents.shape[-2] // config.patch_size, latents.shape[-1] // config.patch_size)
    crops = get_resize_crop_region_for_grid(grid, config.sample_width // config.patch_size, config.sample_height // config.patch_size)
    tables = get_3d_rotary_pos_embed(embed_dim=config.attention_head_dim, crops_coords=crops, grid_size=grid,
                                     temporal_size=latents.shape[2], device=latents.device)
    return {"image_rotary_emb": tables}


def _ltx_grid(backbone, latents):
    """LTX-Video's RoPE needs the latent grid and the pipeline's interpolation scale (frame rate 25)."""
    temporal, spatial = backbone.vae.temporal_compression_ratio, backbone.vae.spatial_compression_ratio
    return {"num_frames": latents.shape[2], "height": latents.shape[3], "width": latents.shape[4],
            "rope_interpolation_scale": (temporal / 25.0, spatial, spatial)}


_COGVIDEOX_SCHEDULER = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
                            prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
                            timestep_spacing="trailing", clip_sample=False)
_COGVIDEOX_2B = dict(num_attention_heads=30, attention_head_dim=64, num_layers=30, in_channels=16, out_channels=16,
                     time_embed_dim=512, text_embed_dim=4096, sample_width=90, sample_height=60, sample_frames=49,
                     patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226)

FAMILIES: dict[str, DiTFamily] = {family.name: family for family in (
    DiTFamily("cogvideox-2b", "CogVideoX-2B DiT block tokens (DDPM v-prediction noising)", "THUDM/CogVideoX-2b",
              "Apache-2.0", "CogVideoXTransformer3DModel", "AutoencoderKLCogVideoX", "CogVideoXPipeline",
              ("transformer_blocks",), ("num_layers",), "ddpm", "scale", (480, 720), 226, ("max_text_seq_length", "text_embed_dim"), _COGVIDEOX_2B,
              {"scaling_factor": 1.15258426}, frames_first=True, masked_text=False, scheduler={**_COGVIDEOX_SCHEDULER, "snr_shift_scale": 3.0},
              extra_inputs=_cogvideox_rotary),
    DiTFamily("cogvideox-5b", "CogVideoX-5B DiT block tokens (DDPM v-prediction noising, 3-D RoPE)", "THUDM/CogVideoX-5b",
              "CogVideoX licence (research; commercial use by registration)", "CogVideoXTransformer3DModel",
              "AutoencoderKLCogVideoX", "CogVideoXPipeline", ("transformer_blocks",), ("num_layers",), "ddpm", "scale",
              (480, 720), 226, ("max_text_seq_length", "text_embed_dim"),
              {**_COGVIDEOX_2B, "num_attention_heads": 48, "num_layers": 42, "use_rotary_positional_embeddings": True},
              {"scaling_factor": 0.7}, frames_first=True, masked_text=False, scheduler={**_COGVIDEOX_SCHEDULER, "snr_shift_scale": 1.0},
              extra_inputs=_cogvideox_rotary),
    DiTFamily("hunyuanvideo", "HunyuanVideo 13B DiT block tokens (20 dual-stream + 40 single-stream blocks; flow)",
              "hunyuanvideo-community/HunyuanVideo", "Tencent Hunyuan Community licence",
              "HunyuanVideoTransformer3DModel", "AutoencoderKLHunyuanVideo", "HunyuanVideoPipeline",
              ("transformer_blocks", "single_transformer_blocks"), ("num_layers", "num_single_layers"), "flow", "scale",
              (720, 1280), 256, (None, "text_embed_dim"), {}, {"scaling_factor": 0.476986},
              pooled_key="pooled_projection_dim"),
    DiTFamily("ltx-video", "LTX-Video 2B DiT block tokens (32x VAE, patch 1; flow)", "Lightricks/LTX-Video",
              "LTX-Video open-weights licence", "LTXVideoTransformer3DModel", "AutoencoderKLLTXVideo", "LTXPipeline",
              ("transformer_blocks",), ("num_layers",), "flow", "mean_std_scale", (480, 704), 128, (None, "caption_channels"), {},
              packed=True, extra_inputs=_ltx_grid),
    DiTFamily("mochi-1", "Mochi-1 10B asymmetric DiT block tokens (reversed flow clock)", "genmo/mochi-1-preview",
              "Apache-2.0", "MochiTransformer3DModel", "AutoencoderKLMochi", "MochiPipeline", ("transformer_blocks",),
              ("num_layers",), "flow_inverted", "mean_std", (480, 848), 256, ("max_sequence_length", "text_embed_dim"), {}),
)}


# -- the feature path -----------------------------------------------------------------------------------


class VideoDiTBackbone(Backbone):
    """Frozen video DiT of a :class:`DiTFamily`, truncated after block ``block``; see the module docstring."""

    has_weights = True
    sweep_options = ("timestep", "block", "grid", "seed", "num_noise_samples")

    def __init__(self, name: str, weights=None, timestep=300, block=None, grid=(14, 14), size=None, frame_mode="per_frame",
                 seed=0, num_noise_samples=1, prompt_embedding=None, dtype=None, device=None, chunk_frames=4,
                 transformer_config=None, vae_config=None):
        super().__init__()
        import diffusers

        self.name, self.family = name, FAMILIES[name]
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = parse_dtype(dtype) if dtype is not None else (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        if frame_mode not in FRAME_MODES:
            raise ValueError(f"frame_mode must be one of {FRAME_MODES}; got {frame_mode!r}")
        self.frame_mode, self.chunk_frames = frame_mode, max(1, int(chunk_frames))
        folder = _resolve_folder(self.family, weights)
        self.weights_label = _label(folder)
        transformer_cls, vae_cls = getattr(diffusers, self.family.transformer), getattr(diffusers, self.family.vae)
        config = _config(transformer_cls, folder, "transformer", {**self.family.architecture, **(transformer_config or {})})
        self.total_blocks = sum(int(config[key]) for key in self.family.layer_keys)
        # Default: the middle block (the paper's Wan setting, block 20 of 30, is near it).
        self.loaded_blocks = _block(self.total_blocks // 2 if block is None else block, self.total_blocks) + 1
        # One block more than needed is built, then dropped: a family whose last block differs (Mochi's
        # context-pre-only block) keeps the structure its block l has in the full model.
        spare = truncated(self.family, config, min(self.loaded_blocks, self.total_blocks - 1))
        self.transformer = _load(transformer_cls, spare, folder, "transformer", seed,
                                 keep=lambda model: keep_blocks(model, self.family, self.loaded_blocks - 1))
        vae = _config(vae_cls, folder, "vae", {**self.family.vae_architecture, **(vae_config or {})})
        from vega3d.backbones.wan_loading import _encoder_only

        self.vae = _load(vae_cls, vae, folder, "vae", seed + 1, keep=_encoder_only)
        from vega3d.backbones.wan_loading import cast_keeping_fp32

        for module in (self.transformer, self.vae):
            cast_keeping_fp32(module, self.dtype)
            module.to(self.device).eval().requires_grad_(False)
        self.spatial_ratio, self.temporal_ratio = _compression(self.vae)
        patch = int(self.transformer.config.patch_size if not isinstance(self.transformer.config.patch_size, (list, tuple))
                    else self.transformer.config.patch_size[-1])
        self.size = fit_size(size or self.family.size, self.spatial_ratio * patch)
        self.prompt_file, self.text = _text_condition(self.family, self.transformer.config, folder, prompt_embedding)
        self.alphas_cumprod = _alphas_cumprod(self.family, folder)
        self.set_options(timestep=timestep, block=self.loaded_blocks - 1 if block is None else block, grid=grid, seed=seed,
                         num_noise_samples=num_noise_samples)

    def set_options(self, **options):
        if "block" in options:
            options["block"] = _block(options["block"], self.total_blocks)
            if options["block"] >= self.loaded_blocks:
                raise ValueError(f"block={options['block']} was not loaded: this backbone holds blocks 0..{self.loaded_blocks - 1}")
        if "timestep" in options:
            if not 0 <= int(options["timestep"]) <= NUM_TRAIN_TIMESTEPS:
                raise ValueError(f"timestep must be an integer in [0, {NUM_TRAIN_TIMESTEPS}]; got {options['timestep']}")
            options["timestep"] = int(options["timestep"])
        if "grid" in options:
            options["grid"] = parse_grid(options["grid"])
        for key in ("seed", "num_noise_samples"):
            if key in options:
                options[key] = int(options[key])
        if options.get("num_noise_samples", 1) < 1:
            raise ValueError(f"num_noise_samples must be >= 1; got {options['num_noise_samples']}")
        return super().set_options(**options)

    def config(self):
        return {**super().config(), "timestep": self.timestep, "block": self.block, "grid": list(self.grid),
                "size": list(self.size), "frame_mode": self.frame_mode, "seed": self.seed, "noise": self.family.noise,
                "num_noise_samples": self.num_noise_samples, "prompt_embedding": self.prompt_file,
                "dtype": str(self.dtype).removeprefix("torch."), "num_parameters": self.num_parameters}

    def noised(self, z0: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The family's noise rule at ``self.timestep``: (z_k, the timestep value the DiT is conditioned on)."""
        k = self.timestep
        if self.family.noise == "ddpm":
            step = min(k, NUM_TRAIN_TIMESTEPS - 1)
            alpha = float(self.alphas_cumprod[step])
            return alpha ** 0.5 * z0 + (1.0 - alpha) ** 0.5 * eps, float(step)
        sigma = k / NUM_TRAIN_TIMESTEPS
        shown = NUM_TRAIN_TIMESTEPS * (1.0 - sigma) if self.family.noise == "flow_inverted" else NUM_TRAIN_TIMESTEPS * sigma
        return (1.0 - sigma) * z0 + sigma * eps, shown

    @torch.inference_mode()
    def encode(self, frames, scene_id=None):
        video = F.interpolate(frames.to(self.device, torch.float32), size=self.size, mode="bilinear", align_corners=False,
                              antialias=True) * 2.0 - 1.0
        clips, latent_of_frame = pack_frames(video, self.frame_mode, self.temporal_ratio)
        batch = self.chunk_frames if self.frame_mode == "per_frame" else 1
        clip_count, _, frames, height, width = clips.shape
        latent_shape = (clip_count, int(self.vae.config.latent_channels), 1 + (frames - 1) // self.temporal_ratio,
                        height // self.spatial_ratio, width // self.spatial_ratio)
        draws = seeded_noise(latent_shape, self.seed, scene_id, self.num_noise_samples)
        features = []
        for start in range(0, clip_count, batch):
            z0 = self.latents(clips[start:start + batch])
            tokens = 0.0
            for eps in draws:
                z_k, shown = self.noised(z0, eps[start:start + batch].to(self.device))
                tokens = tokens + pool_tokens(self.block_tokens(z_k, shown), self.grid)
            features.append(tokens / len(draws))
        features = torch.cat(features)  # [clips, latent frames, h, w, C]
        return torch.stack([features[c, j] for c, j in latent_of_frame]).float()

    def latents(self, clips: torch.Tensor) -> torch.Tensor:
        """Normalised VAE posterior mean ``[B, C, F, h, w]`` (float32) of clips in [-1, 1]."""
        mean = self.vae.encode(clips.to(self.dtype)).latent_dist.mean.float()
        config = self.vae.config
        if self.family.latent_norm == "scale":
            return mean * float(config.scaling_factor)
        # LTX-Video keeps its statistics as weights (buffers), the others in the VAE config.
        buffers = dict(self.vae.named_buffers(recurse=False))
        stats = [buffers[key] if key in buffers else getattr(config, key) for key in ("latents_mean", "latents_std")]
        m, sd = (torch.as_tensor(v, dtype=torch.float32, device=mean.device).view(1, -1, 1, 1, 1) for v in stats)
        scale = float(config.scaling_factor) if self.family.latent_norm == "mean_std_scale" else 1.0
        return (mean - m) * scale / sd

    def block_tokens(self, latents: torch.Tensor, timestep: float) -> torch.Tensor:
        """Video tokens after block ``self.block`` ``[B, F, h, w, C]``: the forward of the truncated model,
        read by a hook on that block (later blocks are not part of the model)."""
        captured = {}

        def capture(_module, _inputs, output):  # returns None: the forward itself is left unchanged
            captured["tokens"] = output[0] if isinstance(output, tuple) else output

        handle = self.block_module(self.block).register_forward_hook(capture)
        batch, _, frames, height, width = latents.shape
        inputs = self._inputs(latents, timestep)
        try:
            autocast = torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)
            with autocast:
                self.transformer(**inputs, return_dict=False)
        finally:
            handle.remove()
        patch = self.transformer.config.patch_size
        p_t, p = (patch[0], patch[-1]) if isinstance(patch, (list, tuple)) else (getattr(self.transformer.config, "patch_size_t", None) or 1, patch)
        return captured["tokens"][:, : (frames // p_t) * (height // p) * (width // p)].unflatten(1, (frames // p_t, height // p, width // p))

    def block_module(self, index: int):
        for attribute in self.family.block_lists:
            blocks = getattr(self.transformer, attribute)
            if index < len(blocks):
                return blocks[index]
            index -= len(blocks)
        raise IndexError(index)

    def _inputs(self, latents, timestep) -> dict:
        batch = latents.shape[0]
        text, mask, pooled = (None if t is None else t.to(self.device, self.dtype).expand(batch, *t.shape[1:]) for t in self.text)
        hidden = latents.to(self.dtype)
        if self.family.frames_first:
            hidden = hidden.permute(0, 2, 1, 3, 4)
        elif self.family.packed:
            hidden = hidden.permute(0, 2, 3, 4, 1).flatten(1, 3)
        inputs = {"hidden_states": hidden, "encoder_hidden_states": text,
                  "timestep": torch.full((batch,), timestep, device=self.device, dtype=torch.float32)}
        if self.family.masked_text:
            inputs["encoder_attention_mask"] = mask
        if self.family.pooled_key:
            inputs["pooled_projections"] = pooled
            if self.transformer.config.guidance_embeds:  # distilled guidance, as its pipeline sets it (6.0 x 1000)
                inputs["guidance"] = torch.full((batch,), 6000.0, device=self.device, dtype=torch.float32)
        if self.family.extra_inputs is not None:
            inputs.update(self.family.extra_inputs(self, latents))
        return inputs


def keep_blocks(model, family: DiTFamily, block: int):
    """``model`` with blocks 0..block only (in the order the block lists run)."""
    remaining = block + 1
    for attribute in family.block_lists:
        blocks = getattr(model, attribute)
        setattr(model, attribute, blocks[:remaining])
        remaining -= len(getattr(model, attribute))
    return model


def truncated(family: DiTFamily, config: dict, block: int) -> dict:
    """The config of the model holding blocks 0..block only (later block lists emptied)."""
    config, remaining = dict(config), block + 1
    for key in family.layer_keys:
        config[key] = min(int(config[key]), remaining)
        remaining -= config[key]
    return config


def _compression(vae) -> tuple[int, int]:
    """(spatial, temporal) compression of a video VAE: an attribute (LTX, Mochi, Hunyuan) or config entries."""
    config, values = vae.config, []
    for attribute, keys, default in (("spatial_compression_ratio", ("spatial_compression_ratio", "scale_factor_spatial"), 8),
                                     ("temporal_compression_ratio", ("temporal_compression_ratio", "scale_factor_temporal"), 4)):
        value = vae.__dict__.get(attribute) or next((config[k] for k in keys if config.get(k)), None)
        values.append(int(value or default))
    return values[0], values[1]


def _block(block, total) -> int:
    if not 0 <= int(block) < total:
        raise ValueError(f"block={block} is out of range: this model has blocks 0..{total - 1}")
    return int(block)


def _resolve_folder(family: DiTFamily, weights) -> Path | None:
    """A diffusers folder (``transformer/``, ``vae/``), a hub id, or "random" (None)."""
    if weights == "random":
        return None
    path = Path(weights or family.hub_id).expanduser()
    if path.is_dir():
        if not (path / "transformer").is_dir() or not (path / "vae").is_dir():
            raise FileNotFoundError(f"{path}: not a diffusers {family.pipeline} folder (needs transformer/ and vae/)")
        return path
    from vega3d.backbones.checkpoints import hub_snapshot

    return hub_snapshot(path, ["model_index.json", "transformer/*", "vae/*", "scheduler/*"], family.hub_id)


def _label(folder: Path | None) -> str:
    if folder is None:
        return RANDOM_WEIGHTS_LABEL
    return RANDOM_WEIGHTS_LABEL if is_random_weights(folder) else str(folder.resolve())


def _config(cls, folder: Path | None, part: str, defaults: dict) -> dict:
    """The folder's config, or (random weights) the class's own defaults, which are the published model's
    where a family lists no architecture, overridden by ``defaults``."""
    if folder is None:
        import inspect

        signature = inspect.signature(cls.__init__).parameters.values()
        own = {p.name: p.default for p in signature if p.default is not inspect.Parameter.empty}
        return {**own, **defaults}
    config_file = folder / part / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: missing")
    return {k: v for k, v in cls.load_config(str(folder / part)).items() if not k.startswith("_")}


def _load(cls, config: dict, folder: Path | None, part: str, seed: int, keep=lambda model: model):
    """Random (seeded) or filled strictly from the folder's safetensors, reading only the keys ``keep`` leaves."""
    from vega3d.backbones.wan_loading import _filled, _random

    build = lambda: keep(cls.from_config(config))  # noqa: E731
    if folder is None:
        return _random(build, seed)
    files = sorted((folder / part).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder / part}: no .safetensors weights (only safetensors are loaded)")
    return _filled(build, None, folder / part, files=files)


def _alphas_cumprod(family: DiTFamily, folder: Path | None):
    if family.noise != "ddpm":
        return None
    from diffusers import CogVideoXDDIMScheduler

    config_file = None if folder is None else folder / "scheduler" / "scheduler_config.json"
    if config_file is not None and config_file.is_file():
        config = {k: v for k, v in json.loads(config_file.read_text()).items() if not k.startswith("_")}
        scheduler = CogVideoXDDIMScheduler.from_config(config)
    else:
        scheduler = CogVideoXDDIMScheduler(**family.scheduler)
    return scheduler.alphas_cumprod.double()


# -- the empty-prompt condition --------------------------------------------------------------------------

PROMPT_FILE_KEYS = ("prompt_embeds", "prompt_attention_mask", "pooled_prompt_embeds")


def text_shape(family: DiTFamily, config) -> tuple[int, int, int | None]:
    """(rows, width, pooled width or None) of the family's prompt condition for this transformer config."""
    rows_key, width_key = family.text_keys
    rows = int(getattr(config, rows_key)) if rows_key else family.text_rows
    pooled = int(getattr(config, family.pooled_key)) if family.pooled_key else None
    return rows, int(getattr(config, width_key)), pooled


def empty_condition(family: DiTFamily, config) -> dict[str, torch.Tensor]:
    """A stand-in for random weights (no text encoder exists): zeros, the first row marked valid (one EOS)."""
    rows, width, pooled = text_shape(family, config)
    mask = torch.zeros(1, rows)
    mask[:, 0] = 1.0
    tensors = {"prompt_embeds": torch.zeros(1, rows, width), "prompt_attention_mask": mask}
    if pooled:
        tensors["pooled_prompt_embeds"] = torch.zeros(1, pooled)
    return tensors


def _text_condition(family: DiTFamily, config, folder: Path | None, path):
    """(label, (embeds [1, L, D], mask [1, L], pooled [1, P] or None)) of the empty prompt."""
    if path is None and folder is None:
        tensors, label = empty_condition(family, config), "zeros (random weights)"
    else:
        from safetensors.torch import load_file

        from vega3d.backbones.wan_prompt import DEFAULT_PROMPT_FILE

        path = Path(path) if path is not None else folder / DEFAULT_PROMPT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no empty-prompt embedding for {family.name}: pass prompt_embedding=PATH or make it "
                                    f"once with `vega3d prompt-embedding --backbone {family.name} --weights DIR` (looked for {path})")
        tensors = load_file(str(path))
        embeds = tensors.get("prompt_embeds")
        rows, width, pooled = text_shape(family, config)
        if embeds is None or embeds.ndim != 3 or embeds.shape[-1] != width or (family.text_keys[0] and embeds.shape[1] != rows):
            raise ValueError(f"prompt embedding {path}: expected 'prompt_embeds' [1, {rows}, {width}] for {family.name}; "
                             f"found {({k: tuple(v.shape) for k, v in tensors.items()})}")
        if pooled and "pooled_prompt_embeds" not in tensors:
            raise ValueError(f"prompt embedding {path}: {family.name} needs 'pooled_prompt_embeds' [1, {pooled}]")
        digest = hashlib.sha256(embeds.float().numpy().tobytes()).hexdigest()[:16]
        label = f"{path.name}@sha256:{digest}"
    embeds = tensors["prompt_embeds"].float()
    mask = tensors.get("prompt_attention_mask", torch.ones(embeds.shape[:2])).float()
    pooled = tensors.get("pooled_prompt_embeds")
    return label, (embeds, mask, None if pooled is None else pooled.float())


def save_random_dit(folder, name: str, transformer_config: dict | None = None, vae_config: dict | None = None,
                    seed: int = 0) -> Path:
    """Write an untrained ``name`` model as a diffusers folder (``transformer/``, ``vae/``, scheduler for the
    DDPM families, a zero empty-prompt file) marked as random: every backbone built from it says so."""
    import diffusers

    from vega3d.backbones.wan_prompt import DEFAULT_PROMPT_FILE
    from vega3d.io import save_safetensors

    family, folder = FAMILIES[name], Path(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = getattr(diffusers, family.transformer)(**{**family.architecture, **(transformer_config or {})})
        vae = getattr(diffusers, family.vae)(**{**family.vae_architecture, **(vae_config or {})})
    transformer.save_pretrained(folder / "transformer")
    vae.save_pretrained(folder / "vae")
    if family.noise == "ddpm":
        diffusers.CogVideoXDDIMScheduler(**family.scheduler).save_pretrained(folder / "scheduler")
    save_safetensors(empty_condition(family, transformer.config), folder / DEFAULT_PROMPT_FILE)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": family.pipeline, "transformer": ["diffusers", family.transformer],
                                                         "vae": ["diffusers", family.vae]}, indent=2, sort_keys=True))
    (folder / RANDOM_WEIGHTS_MARKER).write_text(f"{RANDOM_WEIGHTS_LABEL}: written by vega3d save_random_dit(seed={seed})\n")
    return folder


def make_family_prompt_embedding(name: str, folder, prompt: str = "", dtype=torch.float32, device="cpu") -> dict[str, torch.Tensor]:
    """The family's own prompt encoding (its diffusers pipeline's ``encode_prompt``) of ``prompt``."""
    import diffusers

    family = FAMILIES[name]
    pipeline = getattr(diffusers, family.pipeline).from_pretrained(str(folder), transformer=None, vae=None, torch_dtype=dtype).to(device)
    device = torch.device(device)
    with torch.inference_mode():
        if family.pooled_key:  # HunyuanVideo: (embeds, pooled, mask)
            embeds, pooled, mask = pipeline.encode_prompt(prompt, device=device, dtype=dtype, max_sequence_length=family.text_rows)
            return {"prompt_embeds": embeds.float().cpu(), "prompt_attention_mask": mask.float().cpu(), "pooled_prompt_embeds": pooled.float().cpu()}
        out = pipeline.encode_prompt(prompt, do_classifier_free_guidance=False, max_sequence_length=family.text_rows,
                                     device=device, dtype=dtype)
    embeds = out[0].float().cpu()
    tensors = {"prompt_embeds": embeds}
    if len(out) == 4:  # LTX-Video, Mochi: (embeds, mask, negative embeds, negative mask)
        tensors["prompt_attention_mask"] = out[1].float().cpu()
    return tensors


def _register(name: str) -> None:
    family = FAMILIES[name]
    register_backbone(name, family.description, licence=family.licence)(
        lambda weights=None, **options: VideoDiTBackbone(name, weights, **options))


for _name in FAMILIES:
    _register(_name)
