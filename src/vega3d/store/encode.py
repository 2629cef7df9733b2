"""Cache-or-encode: every consumer of backbone tokens goes through here, so a scene is encoded once."""

from __future__ import annotations

import torch

from vega3d.store.features import FeatureStore, StoreMiss


def encode_scene(backbone, frames, store: FeatureStore | None = None) -> torch.Tensor:
    """Tokens ``[T, h, w, C]`` of ``frames`` (a ``SceneFrames``): from ``store`` when present, else encoded
    (inference mode) and saved there. A corrupt or mismatched stored file raises ``StoreError``."""
    config = backbone.config()
    if store is not None:
        try:
            return store.load(frames.scene_id, config, frames.frame_indices)
        except StoreMiss:
            pass
    with torch.inference_mode():
        tokens = backbone(frames.images, scene_id=frames.scene_id, cameras=getattr(frames, "cameras", None)).float().cpu()
    if store is not None:
        store.save(frames.scene_id, config, frames.frame_indices, tokens,
                   metadata={"frame_ids": frames.frame_ids, "sampling": frames.sampling})
    return tokens
