"""The fused DINOv2 + SigLIP vision backbone and the 3-layer projector (REFERENCE-VLA F1.2-F1.6, F1.10).

Both featurizers are the timm models the OpenVLA checkpoint was trained with, built with
``pretrained=False`` (weights come from the checkpoint). Patch features are the output of the second-to-last
block, without the final norm and without prefix tokens; DINOv2's LayerScale ``gamma`` is named
``scale_factor`` as in the Hugging Face checkpoint (HF renames parameters called "gamma").
"""

from __future__ import annotations

import torch
from torch import nn

from vega3d.policies.config import OpenVLAConfig
from vega3d.policies.timm_import import import_timm


class LayerScale(nn.Module):
    """timm's LayerScale with the checkpoint's parameter name ``scale_factor``."""

    def __init__(self, scale: torch.Tensor):
        super().__init__()
        self.scale_factor = nn.Parameter(scale.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


def _rename_layer_scales(model: nn.Module) -> None:
    timm = import_timm()
    for block in getattr(model, "blocks", []):
        for name in ("ls1", "ls2"):
            scale = getattr(block, name, None)
            if isinstance(scale, timm.layers.LayerScale):
                setattr(block, name, LayerScale(scale.gamma))


class FusedVisionBackbone(nn.Module):
    """Pixel values ``[B, 6N, H, W]`` (N images, 3 DINO- then 3 SigLIP-normalised channels each) ->
    patch features ``[B, N * P, C_dino + C_siglip]`` (P = 256 at 224 px), images concatenated on the patch axis."""

    def __init__(self, config: OpenVLAConfig):
        super().__init__()
        timm = import_timm()
        ids = config.timm_model_ids[: 2 if config.use_fused_vision_backbone else 1]
        extra = config.timm_model_kwargs or [{} for _ in ids]
        models = []
        for model_id, act_layer, kwargs in zip(ids, config.timm_override_act_layers, extra):
            options = dict(pretrained=False, num_classes=0, img_size=config.image_sizes[0], **kwargs)
            if act_layer is not None:
                options["act_layer"] = act_layer
            model = timm.create_model(model_id, **options)
            _rename_layer_scales(model)
            models.append(model)
        self.featurizer = models[0]
        self.fused_featurizer = models[1] if len(models) > 1 else None
        self.channels_per_image = 3 * len(models)
        self.embed_dim = sum(m.embed_dim for m in models)
        self.num_patches = self.featurizer.patch_embed.num_patches
        self.grid = tuple(self.featurizer.patch_embed.grid_size)

    @staticmethod
    def _patches(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return model.get_intermediate_layers(images, n=[len(model.blocks) - 2])[0]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = pixel_values.shape
        if channels % self.channels_per_image:
            raise ValueError(f"pixel_values has {channels} channels; expected a multiple of {self.channels_per_image} "
                             "(3 DINO- + 3 SigLIP-normalised channels per image)")
        images = pixel_values.reshape(batch * channels // self.channels_per_image, self.channels_per_image, height, width)
        features = [self._patches(self.featurizer, images[:, :3])]
        if self.fused_featurizer is not None:
            features.append(self._patches(self.fused_featurizer, images[:, 3:]))
        fused = torch.cat(features, dim=-1)
        return fused.reshape(batch, -1, fused.shape[-1])


class PrismaticProjector(nn.Module):
    """``no-align+fused-gelu-mlp``: fc1 (C -> 4C), GELU, fc2 (4C -> D), GELU, fc3 (D -> D)."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(patches)))))
