"""Generative tokens of a clip (Alg. 1 lines 3-5 and 12-16): frozen, inference mode, computed once.

``online``: the backbone is built lazily at the first request and each clip is encoded once (cache or
encode: an in-memory cache, plus the feature store when one is given). ``offline``: the features must
already be in the feature store; a missing entry, or one written by another backbone or another frame
sampling, is an error (never silently re-encoded or mixed).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vega3d.backbones import load_backbone
from vega3d.models.clips import Clip
from vega3d.models.settings import GenerativeSettings

SOURCES = ("online", "offline")


class GenerativeSource:
    def __init__(self, settings: GenerativeSettings, mode: str = "online", store: str | Path | None = None,
                 device: str | torch.device = "cpu"):
        if mode not in SOURCES:
            raise ValueError(f"generative source must be one of {SOURCES}; got {mode!r}")
        if mode == "offline" and store is None:
            raise ValueError("generative source 'offline' needs a feature store folder (store=...)")
        self.settings, self.mode, self.device = settings, mode, torch.device(device)
        self.store = _open_store(store) if store is not None else None
        self._backbone = None
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def backbone(self):
        if self._backbone is None:  # Alg. 1 line 4: frozen, instantiated at the first use
            s = self.settings
            self._backbone = load_backbone(s.backbone, s.backbone_weights, **s.backbone_options).to(self.device)
        return self._backbone

    @torch.inference_mode()
    def tokens(self, clip: Clip) -> torch.Tensor:
        """``[T, h, w, C]`` generative tokens of ``clip`` (CPU, float32), one per sampled frame."""
        key = (clip.clip_id, tuple(clip.frame_indices), tuple(clip.frames.shape))
        if key not in self._cache:
            self._cache[key] = self._check(clip, self._compute(clip).float().cpu())
        return self._cache[key]

    def _compute(self, clip: Clip) -> torch.Tensor:
        if self.mode == "offline":
            return self.store.load(clip.clip_id, self._backbone_config(), clip.frame_indices)
        if self.store is not None:
            from vega3d.store import encode_scene

            return encode_scene(self.backbone, clip.frames.to(self.device), store=self.store, scene_id=clip.clip_id,
                                frame_indices=clip.frame_indices)
        return self.backbone(clip.frames.to(self.device), scene_id=clip.clip_id)

    def _backbone_config(self) -> dict:
        return self.backbone.config()

    def _check(self, clip: Clip, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 4 or tokens.shape[0] != len(clip.frames):
            raise ValueError(
                f"frame counts differ between streams for {clip.clip_id!r}: {len(clip.frames)} sampled frame(s), "
                f"generative tokens of shape {tuple(tokens.shape)}"
            )
        if tokens.shape[-1] != self.settings.feature_dim:
            raise ValueError(
                f"backbone {self.settings.backbone!r} gives {tokens.shape[-1]}-channel tokens; the model's generative "
                f"branch expects feature_dim={self.settings.feature_dim}"
            )
        return tokens


def _open_store(root):
    from vega3d.store import FeatureStore

    return FeatureStore(root)
