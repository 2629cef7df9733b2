"""Cache-or-encode: every consumer of backbone tokens goes through here, so a scene is encoded once."""

from __future__ import annotations

import torch

from vega3d.store.features import FeatureStore, StoreMiss


def encode_tokens(backbone, frames) -> torch.Tensor:
    """The backbone's tokens ``[T, h, w, C]`` of ``frames.images`` (inference mode, float32 on the CPU)."""
    with torch.inference_mode():
        return backbone(frames.images, scene_id=frames.scene_id, cameras=getattr(frames, "cameras", None)).float().cpu()


def save_tokens(store: FeatureStore, config: dict, frames, tokens: torch.Tensor):
    """Store ``tokens`` of ``frames`` under ``config``, with the frames' ids and sampling as metadata."""
    return store.save(frames.scene_id, config, frames.frame_indices, tokens,
                      metadata={"frame_ids": frames.frame_ids, "sampling": frames.sampling})


def encode_scene(backbone, frames, store: FeatureStore | None = None) -> torch.Tensor:
    """Tokens ``[T, h, w, C]`` of ``frames`` (a ``SceneFrames``): from ``store`` when present, else encoded
    (inference mode) and saved there. A corrupt or mismatched stored file raises ``StoreError``."""
    config = backbone.config()
    if store is not None:
        try:
            return store.load(frames.scene_id, config, frames.frame_indices)
        except StoreMiss:
            pass
    tokens = encode_tokens(backbone, frames)
    if store is not None:
        save_tokens(store, config, frames, tokens)
    return tokens
