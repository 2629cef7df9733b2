"""Vision transformers through transformers: SigLIP (semantic branch), DINOv3 and V-JEPA 2 (paper Tab. 4).

``layer`` picks the feature stage: ``None`` is the model's final output (after its last LayerNorm), an
integer is the output of that encoder block (0-based; negative counts from the end). Forward hooks stop
the network there, so later blocks (and heads, V-JEPA 2's predictor) never run. Frames are resized to
``resolution`` as a whole (no crop, so the token grid covers the frame the scene geometry covers) and
normalised with the mean/std of the model's processor config.
"""

from __future__ import annotations

import torch

from vega3d.backbones.pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PretrainedBackbone,
    capture_output,
    check_index,
    from_pretrained,
    preprocessing_constants,
)
from vega3d.backbones.registry import register_backbone
from vega3d.scenes import resize_frames


class ViTBackbone(PretrainedBackbone):
    """Patch tokens of a frozen transformers ViT at a chosen block."""

    sweep_options = ("layer", "grid")
    resize_mode = "bilinear"
    processor_file = "preprocessor_config.json"
    default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, weights=None, resolution=224, layer=None, **options):
        super().__init__(weights, **options)
        self.resolution = int(resolution)
        self.model = self.load_model()
        self.patch_size = self.model.config.patch_size
        if self.resolution < self.patch_size:
            raise ValueError(f"resolution {self.resolution} is smaller than the patch size {self.patch_size}")
        mean, std = preprocessing_constants(self.weights, self.processor_file, self.default_mean, self.default_std)
        self.register_constants(mean=mean, std=std)
        self.layer = layer
        self.check_options()

    def load_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def blocks(self) -> torch.nn.ModuleList:
        raise NotImplementedError

    def final_norm(self) -> torch.nn.Module:
        raise NotImplementedError

    def check_options(self):
        super().check_options()
        if self.layer is not None:
            self.layer = check_index("layer", self.layer, len(self.blocks()), "encoder blocks")

    def native_grid(self) -> tuple[int, int]:
        side = self.resolution // self.patch_size
        return side, side

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        pixels = resize_frames(self.to_model(frames), (self.resolution, self.resolution), self.resize_mode)
        return ((pixels - self.mean) / self.std).to(self.dtype)

    def hidden_states(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Token sequence ``[B, N, C]`` at the chosen stage, patch tokens last."""
        stage = self.final_norm() if self.layer is None else self.blocks()[self.layer]
        return capture_output(stage, lambda: self.model(pixel_values, **self.forward_options()))

    def forward_options(self) -> dict:
        return {}

    def encode(self, frames, scene_id=None):
        h, w = self.native_grid()
        pooled = []
        for chunk in frames.split(self.batch_size):
            hidden = self.hidden_states(self.preprocess(chunk))
            patches = hidden[:, hidden.shape[1] - h * w:]  # drop CLS / register tokens in front
            pooled.append(self.pool(patches.reshape(len(chunk), h, w, -1)))
        return torch.cat(pooled).to(frames.device)

    def config(self):
        return {**super().config(), "resolution": self.resolution, "layer": self.layer,
                "native_grid": list(self.native_grid()), "hidden_size": self.model.config.hidden_size,
                "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}


@register_backbone("siglip-so400m-384", "SigLIP so400m/14 at 384: 27x27 patch tokens, 1152 channels (semantic branch)")
class SiglipBackbone(ViTBackbone):
    """Default ``layer=-2`` (output of the second-to-last block, no post-LayerNorm): the feature LLaVA-style
    MLLMs such as the Video-3D LLM baseline take from this tower. ``layer=None`` gives the post-LayerNorm output."""

    name = "siglip-so400m-384"
    default_weights = "google/siglip-so400m-patch14-384"
    resize_mode = "bicubic"
    default_mean, default_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def __init__(self, weights=None, resolution=384, layer=-2, **options):
        super().__init__(weights, resolution=resolution, layer=layer, **options)

    def load_model(self):
        from transformers import SiglipVisionModel

        return from_pretrained(SiglipVisionModel, self.weights, dtype=self.dtype, device=self.device)

    def blocks(self):
        return self.model.encoder.layers

    def final_norm(self):
        return self.model.post_layernorm

    def forward_options(self):
        # SigLIP learns a position table for its training resolution; other resolutions interpolate it.
        return {"interpolate_pos_encoding": self.resolution != self.model.config.image_size}


@register_backbone("dinov3-vitl16", "DINOv3 ViT-L/16 at 224: final patch tokens (no CLS/register), 1024 channels")
class Dinov3Backbone(ViTBackbone):
    name = "dinov3-vitl16"
    default_weights = "facebook/dinov3-vitl16-pretrain-lvd1689m"

    def load_model(self):
        from transformers import DINOv3ViTModel

        return from_pretrained(DINOv3ViTModel, self.weights, dtype=self.dtype, device=self.device)

    def blocks(self):
        return self.model.model.layer

    def final_norm(self):
        return self.model.norm


@register_backbone("vjepa2-vitg16", "V-JEPA 2 ViT-g/16 at 224: encoder patch tokens, 1408 channels, frames as one clip")
class Vjepa2Backbone(ViTBackbone):
    """All frames form ONE clip (tubelet 2: each temporal token covers two consecutive frames); each
    frame gets the tokens of the tubelet that contains it. An odd frame count repeats the last frame
    once, so the last frame's tubelet is that frame twice. ``batch_size`` does not apply."""

    name = "vjepa2-vitg16"
    default_weights = "facebook/vjepa2-vitg-fpc64-256"
    processor_file = "video_preprocessor_config.json"

    def load_model(self):
        from transformers import VJEPA2Model

        # The RoPE position ids follow config.crop_size: it must equal the input resolution
        # (V-JEPA 2 has no learned position table, so any multiple of the patch size works).
        return from_pretrained(VJEPA2Model, self.weights, dtype=self.dtype, device=self.device, crop_size=self.resolution)

    def blocks(self):
        return self.model.encoder.layer

    def final_norm(self):
        return self.model.encoder.layernorm

    def encode(self, frames, scene_id=None):
        tubelet = self.model.config.tubelet_size
        num_frames = frames.shape[0]
        padded = -num_frames % tubelet
        clip = torch.cat([frames, frames[-1:].expand(padded, -1, -1, -1)]) if padded else frames
        hidden = self.hidden_states(self.preprocess(clip)[None])  # [1, T/2 * h * w, C]; the predictor never runs
        h, w = self.native_grid()
        per_tubelet = self.pool(hidden.reshape(-1, h, w, hidden.shape[-1]))
        frame_to_tubelet = torch.arange(num_frames, device=per_tubelet.device) // tubelet
        return per_tubelet[frame_to_tubelet].to(frames.device)

    def config(self):
        return {**super().config(), "tubelet_size": self.model.config.tubelet_size,
                "frames": "one clip; frame i gets tubelet i // tubelet_size; odd counts repeat the last frame"}
