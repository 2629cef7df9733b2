"""SEVA (Stable Virtual Camera) and Vmem (paper Tab. 4): the UNet's final input-block feature, 1280 x 14 x 14.

The same network (``unet_camera``) with two weight files. One call runs the released offline extractor's
recipe (REFERENCE-ZOO Sec. 2) on the frames of ONE scene, all together (the time-mix attention couples them):

1. Frames scaled to cover ``resolution`` x ``resolution`` (896) and centre-cropped; the intrinsics move
   with them. Half of the frames (``num_input_frames``, default T // 2) are "input" frames: the ones with
   the most depth coverage when the cameras carry it (``input_frames="depth"``), else uniformly spaced.
2. VAE (SD-2.1-base ``AutoencoderKL``) posterior mean x ``scaling_factor`` -> x0 ``[T, 4, 112, 112]``.
3. Context: the CLIP ViT-H/14 image embedding (``CLIPVisionModelWithProjection``) of the input frames at
   224, averaged, shared by every frame (the conditional half of the released CFG batch).
4. Noise at index ``timestep`` of SEVA's discrete EDM schedule: x = x0 + sigma_k eps (input frames keep x0),
   scaled by c_in = 1 / sqrt(sigma_k^2 + 1); the UNet sees t = k.
5. UNet input [x c_in | input mask | Plücker rays of the normalised cameras (6)], the Plücker map also
   FiLM-conditions every ResBlock; the output of input block 11 is the feature.

``timestep`` (the noise index) defaults to what reproduces the paper's Tab. 4 rows, NOT the released scripts'
250: the Tab-4 SEVA row equals Tab-A4's t = 700 row, the Vmem row its t = 300 row (see docs/backbones.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vega3d.backbones.checkpoints import find_weight_file, load_strict, read_state_dict, strip_prefix
from vega3d.backbones.pretrained import PretrainedBackbone, from_pretrained, preprocessing_constants
from vega3d.backbones.registry import BackboneUnavailable, register_backbone
from vega3d.backbones.unet_camera import LATER_PARTS, SevaConfig, SevaInputBlocks, from_published, to_published
from vega3d.backbones.video_dit import noise_seed
from vega3d.scenes import Cameras, resize_center_crop

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
DEFAULT_VAE = "Manojb/stable-diffusion-2-1-base"
DEFAULT_IMAGE_ENCODER = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
NUM_TIMESTEPS = 1000
LOG_SNR_SHIFT = 2.4
INPUT_FRAME_RULES = ("depth", "uniform")
SEVA_LICENCE = "Stability AI Non-Commercial License (research / non-commercial; gated weights)"
VMEM_LICENCE = ("Vmem weights: model card says Apache-2.0, but they are fine-tuned from SEVA, whose "
                "Non-Commercial License may carry over: treat as non-commercial")


def edm_sigma(timestep: int) -> float:
    """sigma_k of SEVA's discrete denoiser: sqrt((1 - abar_k) / abar_k) e^2.4, betas = linspace(sqrt 5e-6, sqrt 0.012)^2."""
    betas = torch.linspace(math.sqrt(5e-6), math.sqrt(0.012), NUM_TIMESTEPS, dtype=torch.float64) ** 2
    abar = torch.cumprod(1.0 - betas, dim=0)[timestep]
    return float(((1.0 - abar) / abar).sqrt() * math.exp(LOG_SNR_SHIFT))


def normalize_cameras(cam_to_world: torch.Tensor) -> torch.Tensor:
    """The released extractor's normalisation: centres minus the mean of the non-outlier centres
    (distance to the median <= min(10 q97, 1e6)), then scaled so camera 0 is 2 from the origin."""
    centres = cam_to_world[:, :3, 3]
    distance = (centres - centres.quantile(0.5, dim=0)).norm(dim=1)
    valid = distance <= min(10.0 * float(distance.quantile(0.97)), 1e6)
    centred = centres - centres[valid].mean(dim=0)
    norm = float(centred[0].norm())
    out = cam_to_world.clone()
    out[:, :3, 3] = centred * (2.0 / norm if norm > 1e-12 else 1.0)
    return out


def plucker_rays(cam_to_world: torch.Tensor, intrinsics: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[T, 6, h, w]`` rays (d, o x d) in camera 0's frame through pixel centres (u + 0.5, v + 0.5)."""
    h, w = size
    relative = torch.linalg.inv(cam_to_world[0]) @ cam_to_world  # camera i -> camera 0 coordinates
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                          indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1)
    directions = relative[:, :3, :3] @ torch.linalg.inv(intrinsics.double()) @ pixels
    directions = directions / directions.norm(dim=1, keepdim=True)
    origins = relative[:, :3, 3:].expand_as(directions)
    moments = torch.cross(origins, directions, dim=1)
    return torch.cat([directions, moments], dim=1).reshape(-1, 6, h, w).float()


def input_frame_indices(cameras: Cameras, count: int, rule: str) -> list[int]:
    """The ``count`` frames that stay clean: most depth coverage first (sorted), or uniformly spaced."""
    total = len(cameras)
    if rule == "depth" and cameras.depth_coverage is not None:
        order = torch.argsort(cameras.depth_coverage, descending=True, stable=True)[:count]
        return sorted(order.tolist())
    return np.linspace(0, total - 1, count).astype(int).tolist() if count else []


class SevaBackbone(PretrainedBackbone):
    """``weights``: the UNet file, or its folder (which may also hold ``vae/`` and ``image_encoder/``).
    ``vae`` / ``image_encoder``: other folders or hub ids (defaults: those sub-folders, else SD-2.1-base and
    CLIP ViT-H-14 laion2B). Options: ``resolution`` (896), ``timestep`` (noise index 0..999), ``seed``,
    ``num_input_frames`` (default T // 2), ``input_frames`` ("depth" or "uniform"), plus ``grid``,
    ``device``, ``dtype``, ``batch_size`` (frames per VAE/CLIP pass; the UNet sees all frames at once)."""

    name = "seva"
    weight_files = ("modelv1.1.safetensors", "model.safetensors")
    hub_id = "stabilityai/stable-virtual-camera"
    default_timestep = 700
    needs_cameras = True
    sweep_options = ("timestep", "seed", "num_input_frames", "grid")

    def __init__(self, weights=None, resolution=896, timestep=None, seed=0, num_input_frames=None, input_frames="depth",
                 vae=None, image_encoder=None, **options):
        if weights is None:
            raise BackboneUnavailable(f"backbone {self.name!r} is not available without its weights: pass weights= the "
                                      f"UNet file from {self.hub_id} ({' or '.join(self.weight_files)}) or its folder")
        super().__init__(weights, **options)
        self.weight_file = find_weight_file(self.weights, self.weight_files, self.name)
        self.unet = self.load_unet(self.weight_file)
        folder = self.weight_file.parent
        self.vae_weights = str(vae or (folder / "vae" if (folder / "vae").is_dir() else DEFAULT_VAE))
        self.image_encoder_weights = str(image_encoder or (folder / "image_encoder" if (folder / "image_encoder").is_dir()
                                                           else DEFAULT_IMAGE_ENCODER))
        from diffusers import AutoencoderKL
        from transformers import CLIPVisionModelWithProjection

        subfolder = "vae" if self.vae_weights == DEFAULT_VAE else None
        self.vae = from_pretrained(AutoencoderKL, self.vae_weights, subfolder, self.dtype, self.device)
        self.image_encoder = from_pretrained(CLIPVisionModelWithProjection, self.image_encoder_weights, dtype=self.dtype,
                                             device=self.device)
        mean, std = preprocessing_constants(self.image_encoder_weights, "preprocessor_config.json", CLIP_MEAN, CLIP_STD)
        self.register_constants(clip_mean=mean, clip_std=std)
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = int(resolution)
        self.timestep = self.default_timestep if timestep is None else timestep
        self.seed, self.num_input_frames, self.input_frames = seed, num_input_frames, input_frames
        self.check_options()

    def load_unet(self, path: Path) -> SevaInputBlocks:
        state = {k: v for k, v in self.read_weights(path).items() if not k.startswith(LATER_PARTS)}
        config = SevaConfig.from_state_dict(state, path)
        with torch.device("meta"):
            unet = SevaInputBlocks(config)
        load_strict(unet, state, path, f"the {self.name} UNet input blocks {config}", to_published, from_published)
        return unet.to(device=self.device, dtype=self.dtype)

    def read_weights(self, path: Path) -> dict[str, torch.Tensor]:
        return strip_prefix(read_state_dict(path), "module.")

    def check_options(self):
        super().check_options()
        if not isinstance(self.timestep, int) or not 0 <= self.timestep < NUM_TIMESTEPS:
            raise ValueError(f"timestep must be an integer noise index in [0, {NUM_TIMESTEPS - 1}]; got {self.timestep!r}")
        if self.input_frames not in INPUT_FRAME_RULES:
            raise ValueError(f"input_frames must be one of {INPUT_FRAME_RULES}; got {self.input_frames!r}")
        if self.num_input_frames is not None and int(self.num_input_frames) < 0:
            raise ValueError(f"num_input_frames must be >= 0; got {self.num_input_frames}")
        if self.resolution % (8 * self.vae_scale):
            raise ValueError(f"resolution must be a multiple of {8 * self.vae_scale} (VAE x UNet downsampling); "
                             f"got {self.resolution}")

    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        means = [self.vae.encode(chunk.to(self.dtype) * 2 - 1).latent_dist.mean for chunk in pixels.split(self.batch_size)]
        return torch.cat(means).float() * self.vae.config.scaling_factor

    def context(self, pixels: torch.Tensor) -> torch.Tensor:
        """The mean CLIP image embedding ``[1, 1, D]`` of the input frames (zeros when there are none)."""
        if len(pixels) == 0:
            return torch.zeros(1, 1, self.image_encoder.config.projection_dim, device=self.device)
        side = self.image_encoder.config.image_size
        clip = F.interpolate(pixels, size=(side, side), mode="bicubic", align_corners=True, antialias=True)
        clip = ((clip - self.clip_mean) / self.clip_std).to(self.dtype)
        embeds = torch.cat([self.image_encoder(pixel_values=chunk).image_embeds for chunk in clip.split(self.batch_size)])
        return embeds.float().mean(dim=0).view(1, 1, -1)

    def encode(self, frames, scene_id=None, cameras=None):
        t = frames.shape[0]
        side = self.resolution
        pixels, cameras = resize_center_crop(self.to_model(frames), (side, side), cameras)
        x0 = self.latents(pixels)
        latent_size = tuple(x0.shape[-2:])
        count = min(t, t // 2 if self.num_input_frames is None else int(self.num_input_frames))
        inputs = input_frame_indices(cameras, count, self.input_frames)
        generator = torch.Generator("cpu").manual_seed(noise_seed(self.seed, scene_id))
        eps = torch.randn(x0.shape, generator=generator).to(x0.device)
        sigma = edm_sigma(self.timestep)
        noised = x0 + sigma * eps
        mask = torch.zeros(t, 1, *latent_size, device=x0.device)
        mask[inputs] = 1.0
        noised[inputs] = x0[inputs]
        camera = cameras.resized(latent_size)
        rays = plucker_rays(normalize_cameras(camera.cam_to_world.double()), camera.intrinsics, latent_size).to(x0.device)
        unet_input = torch.cat([noised / math.sqrt(sigma**2 + 1.0), mask, rays], dim=1).to(self.dtype)
        context = self.context(pixels[inputs]).expand(t, 1, -1).to(self.dtype)
        timesteps = torch.full((t,), self.timestep, device=x0.device)
        feature = self.unet(unet_input, timesteps, context, rays.to(self.dtype), num_frames=t)
        return self.pool(feature.permute(0, 2, 3, 1)).to(frames.device)

    def config(self):
        sigma = edm_sigma(self.timestep)
        return {**super().config(), "resolution": self.resolution, "timestep": self.timestep, "sigma": sigma,
                "c_in": 1.0 / math.sqrt(sigma**2 + 1.0), "seed": self.seed, "num_input_frames": self.num_input_frames,
                "input_frames": self.input_frames, "vae": self.vae_weights, "image_encoder": self.image_encoder_weights,
                "weight_file": str(self.weight_file), "hidden_size": self.unet.out_channels,
                "feature": f"UNet input block {self.unet.config.num_input_blocks - 1} output"}


register_backbone("seva", "SEVA UNet at 896x896 with Plücker cameras: input block 11 output, 1280 channels (t=700)",
                  licence=SEVA_LICENCE)(SevaBackbone)


@register_backbone("vmem", "Vmem (SEVA's UNet, Vmem weights) at 896x896: input block 11 output, 1280 channels (t=300)",
                   licence=VMEM_LICENCE)
class VmemBackbone(SevaBackbone):
    """Vmem's weights are a PyTorch pickle (``vmem_weights.pth``), read with ``torch.load(weights_only=True)``;
    ``vega3d convert-weights`` writes ``vmem_weights.safetensors`` beside it once, which is then preferred."""

    name = "vmem"
    weight_files = ("vmem_weights.safetensors", "vmem_weights.pth")
    hub_id = "liguang0115/vmem"
    default_timestep = 300
