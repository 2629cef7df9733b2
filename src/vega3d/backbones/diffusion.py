"""UNet diffusion backbones and their VAE through diffusers: ``sd2.1``, ``svd`` and ``sd-vae`` (paper Tab. 4, Tab-A1).

Frames are resized as a whole to ``resolution`` (896 for the UNets, so the 64x-downsampled feature is
14x14), mapped to [-1, 1] and encoded by the VAE to the posterior mean. The UNets then see that latent
noised at discrete timestep ``timestep`` (index into the model's 1000-step training schedule) with noise
from ``torch.Generator().manual_seed(seed)``, drawn on the CPU for all frames at once (the same features
on any device and for any ``batch_size``). ``block`` is the UNet down block whose output is taken
(0-based, negative from the end); the default ``-1`` is the last down block, whose output is the input of
the mid block. A forward hook stops the UNet there: the mid block and the decoder half never run.
"""

from __future__ import annotations

import torch

from vega3d.backbones.pretrained import (
    PretrainedBackbone,
    capture_output,
    check_index,
    component_folder,
    from_pretrained,
    preprocessing_constants,
)
from vega3d.backbones.registry import register_backbone
from vega3d.scenes import resize_frames

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class VaeBackbone(PretrainedBackbone):
    """Shared by the three: a diffusers VAE that maps frames to latents."""

    vae_class = "AutoencoderKL"

    def __init__(self, weights=None, resolution=224, **options):
        super().__init__(weights, **options)
        import diffusers

        self.resolution = int(resolution)
        vae_class = getattr(diffusers, self.vae_class)
        self.vae = from_pretrained(vae_class, self.weights, component_folder(self.weights, "vae"), self.dtype, self.device)
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        if self.resolution % self.vae_scale:
            raise ValueError(f"resolution must be a multiple of the VAE's downsampling factor {self.vae_scale}; got {self.resolution}")

    def pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames in [0, 1] -> the VAE's input range [-1, 1] at ``resolution``."""
        return resize_frames(self.to_model(frames), (self.resolution, self.resolution)) * 2.0 - 1.0

    def latent_mean(self, pixels: torch.Tensor) -> torch.Tensor:
        """Posterior mean ``[T, C, H/f, W/f]`` of pixels in [-1, 1], ``batch_size`` frames at a time."""
        means = [self.vae.encode(chunk.to(self.dtype)).latent_dist.mean for chunk in pixels.split(self.batch_size)]
        return torch.cat(means)

    def config(self):
        return {**super().config(), "resolution": self.resolution, "vae_downsampling": self.vae_scale,
                "latent_channels": self.vae.config.latent_channels}


@register_backbone("sd-vae", "Stable Diffusion VAE at 224: latent posterior mean, 4 channels")
class SdVaeBackbone(VaeBackbone):
    """``weights`` is a VAE folder or a Stable Diffusion pipeline folder (its ``vae/`` is used). The latent
    is the unscaled posterior mean."""

    name = "sd-vae"
    default_weights = "stabilityai/stable-diffusion-2-1"
    sweep_options = ("grid",)

    def __init__(self, weights=None, resolution=224, **options):
        super().__init__(weights, resolution=resolution, **options)
        self.check_options()

    def encode(self, frames, scene_id=None):
        latent = self.latent_mean(self.pixels(frames))
        return self.pool(latent.permute(0, 2, 3, 1)).to(frames.device)


class UNetBackbone(VaeBackbone):
    """A noised VAE latent through a UNet, stopped after down block ``block``."""

    sweep_options = ("timestep", "block", "seed", "grid")

    def __init__(self, weights=None, resolution=896, timestep=250, block=-1, seed=0, **options):
        super().__init__(weights, resolution=resolution, **options)
        self.timestep, self.block, self.seed = timestep, block, seed

    def check_options(self):
        super().check_options()
        self.block = check_index("block", self.block, len(self.unet.down_blocks), "UNet down blocks")
        steps = self.scheduler.config.num_train_timesteps
        if not isinstance(self.timestep, int) or not 0 <= self.timestep < steps:
            raise ValueError(f"timestep must be an integer in [0, {steps - 1}] (the {steps}-step training schedule); "
                             f"got {self.timestep!r}")
        self.seed = int(self.seed)

    def seeded_noise(self, *like: torch.Tensor) -> list[torch.Tensor]:
        """Standard normal noise shaped like each tensor, drawn in order from one CPU generator seeded with ``seed``."""
        generator = torch.Generator().manual_seed(self.seed)
        return [torch.randn(t.shape, generator=generator).to(t.device, t.dtype) for t in like]

    def down_block_output(self, run) -> torch.Tensor:
        return capture_output(self.unet.down_blocks[self.block], run)

    def config(self):
        return {**super().config(), "timestep": self.timestep, "block": self.block, "seed": self.seed,
                "num_down_blocks": len(self.unet.down_blocks), "scheduler": type(self.scheduler).__name__}


@register_backbone("sd2.1", "Stable Diffusion 2.1 at 896: UNet feature before the mid block, DDIM noise at t=250, 1280 ch")
class StableDiffusionBackbone(UNetBackbone):
    """Latent = VAE mean x ``scaling_factor`` (0.18215), DDIM ``add_noise`` at ``timestep``, conditioned on the
    CLIP text embedding of ``prompt`` (empty by default), computed once at load; the text encoder is then
    dropped (it is not counted in ``num_parameters``)."""

    name = "sd2.1"
    default_weights = "stabilityai/stable-diffusion-2-1"

    def __init__(self, weights=None, prompt="", **options):
        from diffusers import DDIMScheduler, UNet2DConditionModel

        self.prompt = str(prompt)
        super().__init__(weights, **options)
        self.unet = from_pretrained(UNet2DConditionModel, self.weights, "unet", self.dtype, self.device)
        self.scheduler = from_pretrained(DDIMScheduler, self.weights, "scheduler")
        self.register_buffer("prompt_embedding", self.embed_prompt(), persistent=False)
        self.check_options()

    @torch.no_grad()
    def embed_prompt(self) -> torch.Tensor:
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer = from_pretrained(CLIPTokenizer, self.weights, "tokenizer")
        text_encoder = from_pretrained(CLIPTextModel, self.weights, "text_encoder", self.dtype, self.device)
        ids = tokenizer(self.prompt, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        return text_encoder(ids.to(self.device)).last_hidden_state

    def encode(self, frames, scene_id=None):
        latents = self.latent_mean(self.pixels(frames)) * self.vae.config.scaling_factor
        (noise,) = self.seeded_noise(latents)
        timestep = torch.tensor([self.timestep], device=self.device)
        pooled = []
        for z, eps in zip(latents.split(self.batch_size), noise.split(self.batch_size)):
            noisy = self.scheduler.add_noise(z, eps, timestep)
            text = self.prompt_embedding.expand(len(z), -1, -1)
            feature = self.down_block_output(lambda: self.unet(noisy, timestep, encoder_hidden_states=text))
            pooled.append(self.pool(feature.permute(0, 2, 3, 1)))
        return torch.cat(pooled).to(frames.device)

    def config(self):
        return {**super().config(), "prompt": self.prompt, "latent_scaling": self.vae.config.scaling_factor}


@register_backbone("svd", "Stable Video Diffusion at 896: frames as one video, UNet down-block output, 1280 ch")
class StableVideoDiffusionBackbone(UNetBackbone):
    """All frames are one video. As in the diffusers image-to-video pipeline, the first frame conditions
    the UNet: its CLIP image embedding (cross-attention) and its VAE latent after ``noise_aug_strength``
    noise (concatenated to every frame's latent), with ``fps``, ``motion_bucket_id``, ``noise_aug_strength``
    as time ids. ``timestep`` k sets the EDM noise level sigma_k = sqrt((1 - abar_k) / abar_k) of the
    scheduler's training schedule; the scheduler supplies the input scaling and the UNet's time value."""

    name = "svd"
    default_weights = "stabilityai/stable-video-diffusion-img2vid-xt"
    vae_class = "AutoencoderKLTemporalDecoder"

    def __init__(self, weights=None, fps=7, motion_bucket_id=127, noise_aug_strength=0.02, **options):
        from diffusers import EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionModelWithProjection

        super().__init__(weights, **options)
        self.fps, self.motion_bucket_id, self.noise_aug_strength = int(fps), int(motion_bucket_id), float(noise_aug_strength)
        self.unet = from_pretrained(UNetSpatioTemporalConditionModel, self.weights, "unet", self.dtype, self.device)
        self.scheduler = from_pretrained(EulerDiscreteScheduler, self.weights, "scheduler")
        self.image_encoder = from_pretrained(CLIPVisionModelWithProjection, self.weights, "image_encoder", self.dtype, self.device)
        mean, std = preprocessing_constants(self.weights, "preprocessor_config.json", CLIP_MEAN, CLIP_STD, "feature_extractor")
        self.register_constants(clip_mean=mean, clip_std=std)
        self.check_options()

    def image_embedding(self, first_frame: torch.Tensor) -> torch.Tensor:
        size = self.image_encoder.config.image_size
        pixels = (resize_frames(self.to_model(first_frame), (size, size), "bicubic") - self.clip_mean) / self.clip_std
        return self.image_encoder(pixels.to(self.dtype)).image_embeds[:, None]

    def encode(self, frames, scene_id=None):
        pixels = self.pixels(frames)
        latents = self.latent_mean(pixels) * self.vae.config.scaling_factor
        noise, condition_noise = self.seeded_noise(latents, pixels[:1])
        condition = self.latent_mean(pixels[:1] + self.noise_aug_strength * condition_noise)

        abar = self.scheduler.alphas_cumprod[self.timestep]
        self.scheduler.set_timesteps(sigmas=[float(((1 - abar) / abar) ** 0.5), 0.0], device=self.device)
        time_value = self.scheduler.timesteps[0]
        noisy = self.scheduler.add_noise(latents, noise, time_value[None])
        sample = torch.cat([self.scheduler.scale_model_input(noisy, time_value), condition.expand_as(latents)], dim=1)
        time_ids = torch.tensor([[self.fps - 1, self.motion_bucket_id, self.noise_aug_strength]], device=self.device, dtype=self.dtype)
        embedding = self.image_embedding(frames[:1])
        feature = self.down_block_output(lambda: self.unet(sample[None].to(self.dtype), time_value, encoder_hidden_states=embedding,
                                                           added_time_ids=time_ids))
        return self.pool(feature.permute(0, 2, 3, 1)).to(frames.device)

    def config(self):
        return {**super().config(), "fps": self.fps, "motion_bucket_id": self.motion_bucket_id,
                "noise_aug_strength": self.noise_aug_strength, "latent_scaling": self.vae.config.scaling_factor,
                "conditioning": "first frame (CLIP image embedding + noise-augmented VAE latent)"}
