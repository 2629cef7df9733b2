"""Wan2.1 as a latent world simulator (paper Sec. 4.2): noised VAE latents -> tokens of DiT block ``l``.

frames [T, 3, H, W] in [0, 1]
  -> geometry preset (``paper``: whole field of view resized to ``size``; ``reference``: released crop)
  -> frame packing (``per_frame``: T one-frame clips; ``clip``: one 4n+1-frame video)
  -> VAE posterior mean, normalised: z0 = (mu - latents_mean) / latents_std
  -> z_k = (1 - t_k) z0 + t_k eps, eps seeded from (seed, scene id), DiT timestep 1000 t_k
  -> blocks[0..l] of the DiT only (empty-prompt conditioning) -> tokens of blocks[l]
  -> adaptive average pooling to ``grid`` -> [T, h, w, C]
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vega3d.backbones.registry import Backbone, parse_dtype, parse_grid, register_backbone
from vega3d.backbones.video_dit import fit_size, pack_frames, pool_tokens, seeded_noise
from vega3d.backbones.wan_loading import WAN_VARIANTS, load_transformer, load_vae, resolve_weights, with_dit_weights
from vega3d.backbones.wan_prompt import DEFAULT_PROMPT_FILE, HOW_TO_MAKE, PROMPT_LENGTH, load_prompt_embedding

PRESETS = ("paper", "reference")
FRAME_MODES = ("per_frame", "clip")
REFERENCE_SHIFT = 5.0  # the released code's flow-matching timestep grid
NUM_TRAIN_TIMESTEPS = 1000


def noise_level(timestep: int, preset: str) -> tuple[float, float]:
    """``(sigma, dit_timestep)`` for discrete index ``k``: z_k = (1 - sigma) z0 + sigma eps.

    ``paper``: sigma = k / 1000 and the DiT sees 1000 sigma = k. ``reference``: the released code's
    flow-matching scheduler (``set_timesteps(1000, shift=5)``): sigma = ``linspace(0.999, 0, 1001)[:-1]``
    shifted to 5 sigma / (1 + 4 sigma), integer timesteps ``int64(1000 sigma)`` (truncated), the timestep
    nearest to k (first on ties), and the sigma ``add_noise`` uses for it: the *second* grid entry with that
    timestep where truncation made two equal (k = 300 -> timestep 299, sigma 0.29992384).
    """
    k = int(timestep)
    if not 0 <= k <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"timestep must be an integer in [0, {NUM_TRAIN_TIMESTEPS}]; got {timestep}")
    if preset == "paper":
        return k / NUM_TRAIN_TIMESTEPS, float(k)
    sigmas = np.linspace(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS, 0.0, NUM_TRAIN_TIMESTEPS + 1)[:-1]
    sigmas = REFERENCE_SHIFT * sigmas / (1.0 + (REFERENCE_SHIFT - 1.0) * sigmas)
    timesteps = (sigmas * NUM_TRAIN_TIMESTEPS).astype(np.int64)
    chosen = timesteps[np.argmin(np.abs(timesteps - k))]
    same = np.flatnonzero(timesteps == chosen)
    return float(sigmas[same[1] if len(same) > 1 else same[0]]), float(chosen)


def fit_frames(frames: torch.Tensor, size: tuple[int, int], preset: str) -> torch.Tensor:
    """Frames at the DiT input size. ``paper`` keeps the whole field of view (token (r, c) of the DiT
    and of the semantic grid cover the same image region); ``reference`` upsamples to cover ``size``
    and centre-crops, as the released code does (384x384 -> 1280x1280 -> middle 720 rows)."""
    height, width = size
    if preset == "paper":
        return F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    scale = max(height / frames.shape[-2], width / frames.shape[-1])
    covered = (max(height, round(frames.shape[-2] * scale)), max(width, round(frames.shape[-1] * scale)))
    frames = F.interpolate(frames, size=covered, mode="bilinear", align_corners=False)  # released: no antialias
    top, left = (covered[0] - height) // 2, (covered[1] - width) // 2
    return frames[..., top:top + height, left:left + width]


def dit_block_tokens(model, latents, timestep, text, block: int, control=None) -> torch.Tensor:
    """Output of ``model.blocks[block]`` ``[B, F, h, w, C]``: patch embedding, RoPE, condition embedder,
    then blocks ``0..block`` (VACE: the control blocks and hints that precede it). Nothing later runs."""
    batch, _, frames, height, width = latents.shape
    p_t, p_h, p_w = model.config.patch_size
    rotary = model.rope(latents)
    hidden = model.patch_embedding(latents).flatten(2).transpose(1, 2).contiguous()
    # Timestep and prompt are the same for every clip: embed them once, broadcast over the batch.
    _, projection, text, _ = model.condition_embedder(torch.full((1,), float(timestep), device=latents.device), text)
    projection = projection.unflatten(1, (6, -1))
    text = text.expand(batch, -1, -1)
    hints = {}
    if control is not None:
        control = model.vace_patch_embedding(control).flatten(2).transpose(1, 2)
        for layer, vace_block in zip(model.config.vace_layers, model.vace_blocks):
            if layer >= block:
                break
            hints[layer], control = vace_block(hidden, text, control, projection, rotary)
    for i in range(block + 1):
        hidden = model.blocks[i](hidden, text, projection, rotary)
        if i in hints and i < block:
            hidden = hidden + hints[i]
    return hidden.unflatten(1, (frames // p_t, height // p_h, width // p_w))


class WanBackbone(Backbone):
    """Frozen Wan2.1 DiT truncated after block ``block``; see the module docstring for the data flow."""

    has_weights = True
    sweep_options = ("timestep", "block", "grid", "seed", "num_noise_samples")

    def __init__(self, name="wan2.1-t2v-1.3b", weights=None, timestep=300, block=20, grid=(14, 14), size=None,
                 frame_mode="per_frame", preset="paper", seed=0, num_noise_samples=1, prompt_embedding=None,
                 dtype=None, device=None, chunk_frames=4, vae_tiling=False, vae=None, transformer_config=None,
                 vae_config=None, dit_weights=None):
        super().__init__()
        self.name = name
        self.variant = WAN_VARIANTS[name]
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _dtype(dtype, self.device)
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}; got {preset!r}")
        if frame_mode not in FRAME_MODES:
            raise ValueError(f"frame_mode must be one of {FRAME_MODES}; got {frame_mode!r}")
        self.preset, self.frame_mode = preset, frame_mode
        # Default: the variant's (720x1280 for Wan2.1, the paper's; 704x1280 for Wan2.2's 16x VAE).
        self.size = fit_size(size or self.variant.size, 2 * self.variant.vae_architecture.get("scale_factor_spatial", 8))
        self.chunk_frames = _positive("chunk_frames", chunk_frames)
        self.vae_tiling = bool(vae_tiling)
        source = resolve_weights(name, weights, vae=vae, transformer_config=transformer_config)
        if dit_weights is not None:  # e.g. the released spatial-reasoning checkpoint's own DiT (docs/spatial.md)
            source = with_dit_weights(source, dit_weights)
        self.dit_weights = None if dit_weights is None else str(dit_weights) if not isinstance(dit_weights, dict) else "state dict"
        self.weights_label = source.label
        self.total_blocks = int(source.transformer_config["num_layers"])
        self.loaded_blocks = _block(block, self.total_blocks) + 1
        self.transformer = load_transformer(source, self.variant.vace, self.loaded_blocks - 1, self.dtype, seed=seed).to(self.device)
        vae_config = {**self.variant.vae_architecture, **(vae_config or {})}
        self.vae = load_vae(source, self.dtype, seed=seed, vae_config=vae_config).to(self.device)
        if self.vae_tiling:
            self.vae.enable_tiling()
        self.prompt_file, prompt = _prompt(prompt_embedding, source, int(source.transformer_config["text_dim"]))
        self.register_buffer("prompt_embeds", prompt.to(self.device), persistent=False)
        mean, std = self.vae.config.latents_mean, self.vae.config.latents_std
        self.register_buffer("latents_mean", torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1, 1), persistent=False)
        self.set_options(timestep=timestep, block=block, grid=grid, seed=seed, num_noise_samples=num_noise_samples)

    def set_options(self, **options):
        if "block" in options:
            options["block"] = _block(options["block"], self.total_blocks)
            if options["block"] >= self.loaded_blocks:
                raise ValueError(f"block={options['block']} was not loaded: this backbone holds blocks 0..{self.loaded_blocks - 1} "
                                 f"(load it with block={options['block']} or higher to sweep deeper blocks)")
        if "timestep" in options:
            noise_level(options["timestep"], self.preset)  # validates
            options["timestep"] = int(options["timestep"])
        if "grid" in options:
            options["grid"] = parse_grid(options["grid"])
        if "seed" in options:
            options["seed"] = int(options["seed"])
        if "num_noise_samples" in options:
            options["num_noise_samples"] = _positive("num_noise_samples", options["num_noise_samples"])
        return super().set_options(**options)

    def config(self):
        return {**super().config(), "timestep": self.timestep, "block": self.block, "grid": list(self.grid),
                "size": list(self.size), "frame_mode": self.frame_mode, "preset": self.preset, "seed": self.seed,
                "num_noise_samples": self.num_noise_samples, "prompt_embedding": self.prompt_file,
                "dtype": str(self.dtype).removeprefix("torch."), "vae_tiling": self.vae_tiling,
                **({"dit_weights": self.dit_weights} if self.dit_weights else {})}

    # -- the pipeline -------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, frames, scene_id=None):
        video = fit_frames(frames.to(self.device, torch.float32), self.size, self.preset) * 2.0 - 1.0
        sigma, dit_timestep = noise_level(self.timestep, self.preset)
        clips, latent_of_frame = pack_frames(video, self.frame_mode, self.vae.config.scale_factor_temporal)
        batch = self.chunk_frames if self.frame_mode == "per_frame" else 1
        reference = self._latents(video[:1, :, None]) if self.variant.vace else None
        eps = self._noise(clips.shape, scene_id)
        features = []
        for start in range(0, clips.shape[0], batch):
            z0 = self._latents(clips[start:start + batch])
            control = None
            if reference is not None:
                z0, control = self._vace_inputs(z0, reference)
            tokens = 0.0
            for sample in eps:
                z_k = (1.0 - sigma) * z0 + sigma * sample[start:start + batch].to(self.device)
                tokens = tokens + self._pooled_tokens(z_k, dit_timestep, control)
            features.append(tokens / len(eps))
        features = torch.cat(features)  # [clips, latent frames, h, w, C]
        if reference is not None:
            features = features[:, 1:]  # drop the reference slot
        return torch.stack([features[c, j] for c, j in latent_of_frame]).float()

    def _latents(self, clips: torch.Tensor) -> torch.Tensor:
        """Normalised VAE posterior mean of ``[B, 3, F, H, W]`` clips in [-1, 1] (float32)."""
        mean = self.vae.encode(clips.to(self.dtype)).latent_dist.mean.float()
        return (mean - self.latents_mean) / self.latents_std

    def _noise(self, clip_shape, scene_id) -> list[torch.Tensor]:
        """``num_noise_samples`` draws of eps for all clips at once, on the CPU generator (device-independent)."""
        clips, _, frames, height, width = clip_shape
        scale = self.vae.config.scale_factor_spatial
        latent_frames = 1 + (frames - 1) // self.vae.config.scale_factor_temporal + (1 if self.variant.vace else 0)
        shape = (clips, self.vae.config.z_dim, latent_frames, height // scale, width // scale)
        return seeded_noise(shape, self.seed, scene_id, self.num_noise_samples)

    def _vace_inputs(self, z0, reference):
        """VACE reference-to-video inputs, laid out as diffusers' WanVACEPipeline builds them with a
        reference image and no control video: the reference latent is prepended as an extra frame;
        control = [inactive | reactive | mask] = [ref | 0 | 0] on that frame and [E(0) | E(0) | 1] after."""
        batch, channels, frames, height, width = z0.shape
        ref = reference.expand(batch, -1, -1, -1, -1)
        empty = self._empty_video_latent(frames, height, width).expand(batch, -1, -1, -1, -1)
        mask_channels = self.transformer.config.vace_in_channels - 2 * channels
        control = torch.cat([
            torch.cat([ref, torch.zeros_like(ref), ref.new_zeros(batch, mask_channels, 1, height, width)], dim=1),
            torch.cat([empty, empty, empty.new_ones(batch, mask_channels, frames, height, width)], dim=1),
        ], dim=2)
        return torch.cat([ref, z0], dim=2), control

    def _empty_video_latent(self, frames, height, width):
        key = (frames, height, width)
        if getattr(self, "_empty_key", None) != key:  # the all-grey control video's latent, computed once per shape
            pixels = 1 + (frames - 1) * self.vae.config.scale_factor_temporal
            scale = self.vae.config.scale_factor_spatial
            grey = torch.zeros(1, 3, pixels, height * scale, width * scale, device=self.device)
            self._empty_key, self._empty_latent = key, self._latents(grey)
        return self._empty_latent

    def _pooled_tokens(self, latents, dit_timestep, control) -> torch.Tensor:
        autocast = torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)
        with autocast:
            tokens = dit_block_tokens(self.transformer, latents, dit_timestep, self.prompt_embeds, self.block, control)
        return pool_tokens(tokens, self.grid)


def _prompt(path, source, text_dim):
    if path is None and source.folder is None:  # random weights: no text encoder exists, condition on zeros
        return "zeros (random weights)", torch.zeros(1, PROMPT_LENGTH, text_dim)
    if path is None:
        path = source.folder / DEFAULT_PROMPT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no empty-prompt embedding: pass prompt_embedding=PATH or {HOW_TO_MAKE} "
                                    f"(default location {path})")
    embeds = load_prompt_embedding(path, text_dim)
    digest = hashlib.sha256(embeds.numpy().tobytes()).hexdigest()[:16]
    return f"{Path(path).name}@sha256:{digest}", embeds


def _dtype(dtype, device) -> torch.dtype:
    """Default: bf16 on GPU (the released precision), fp32 on CPU."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return parse_dtype(dtype)


def _positive(name, value) -> int:
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
    return int(value)


def _block(block, total) -> int:
    if not 0 <= int(block) < total:
        raise ValueError(f"block={block} is out of range: this model has blocks 0..{total - 1}")
    return int(block)


def _register(name: str, description: str) -> None:
    register_backbone(name, description)(lambda weights=None, **options: WanBackbone(name, weights, **options))


for _name, _what in [("wan2.1-t2v-1.3b", "Wan2.1-T2V 1.3B DiT block tokens (latent world simulator, default)"),
                     ("wan2.1-vace-1.3b", "Wan2.1-VACE 1.3B DiT block tokens (reference frame = first frame)"),
                     ("wan2.1-t2v-14b", "Wan2.1-T2V 14B DiT block tokens"),
                     ("wan2.1-vace-14b", "Wan2.1-VACE 14B DiT block tokens (reference frame = first frame)"),
                     ("wan2.2-ti2v-5b", "Wan2.2-TI2V 5B DiT block tokens (16x VAE, 48 latent channels)")]:
    _register(_name, _what)
