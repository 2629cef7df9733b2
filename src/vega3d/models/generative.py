"""Generative tokens of a clip (Alg. 1 lines 3-5 and 12-16): frozen, inference mode, computed once.

``online``: the backbone is built lazily at the first request and each clip is encoded once
(cache-or-encode through ``vega3d.store.encode_scene``: an in-memory cache, plus the feature store
when one is given). ``offline``: the features must already be in the feature store and the backbone is
never built; an entry is used only when it was written by the model's backbone (name and options) for
exactly the clip's frame indices. Anything else is an error naming what the store holds instead.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from vega3d.backbones import load_backbone
from vega3d.models.clips import Clip
from vega3d.models.settings import GenerativeSettings
from vega3d.store import FeatureStore, encode_scene
from vega3d.store.features import read_entry

SOURCES = ("online", "offline")


class GenerativeSource:
    def __init__(self, settings: GenerativeSettings, mode: str = "online", store: str | Path | None = None,
                 device: str | torch.device = "cpu"):
        if mode not in SOURCES:
            raise ValueError(f"generative source must be one of {SOURCES}; got {mode!r}")
        if mode == "offline" and store is None:
            raise ValueError("generative source 'offline' needs a feature store folder (store=...)")
        self.settings, self.mode, self.device = settings, mode, torch.device(device)
        self.store = FeatureStore(store) if store is not None else None
        self._backbone = None
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def backbone(self):
        if self._backbone is None:  # Alg. 1 line 4: frozen, instantiated at the first use
            s = self.settings
            self._backbone = load_backbone(s.backbone, s.backbone_weights, **s.backbone_options).to(self.device)
        return self._backbone

    def tokens(self, clip: Clip) -> torch.Tensor:
        """``[T, h, w, C]`` generative tokens of ``clip`` (CPU, float32), one per sampled frame."""
        key = (clip.scene_id, tuple(clip.frame_indices), tuple(clip.images.shape))
        if key not in self._cache:
            if self.mode == "offline":
                tokens = self._stored(clip)
            else:
                tokens = encode_scene(self.backbone, dataclasses.replace(clip, images=clip.images.to(self.device)), self.store)
            self._cache[key] = self._check(clip, tokens.float().cpu())
        return self._cache[key]

    def _matches(self, config: dict) -> bool:
        options = json.loads(json.dumps(self.settings.backbone_options))  # tuples -> lists, as stored
        return config.get("name") == self.settings.backbone and all(config.get(k) == v for k, v in options.items())

    def _stored(self, clip: Clip) -> torch.Tensor:
        """The store entry of this backbone (name + options) and these frame indices; never re-encoded.

        Store ids are paths relative to the folder given to ``vega3d extract`` (``a/scene0``); a clip known
        only by its name (``scene0``) uses the one stored scene of that name, and two are an error."""
        wanted = self.store.path(clip.scene_id, {}, clip.frame_indices).name
        found = {}
        for folder in sorted(p for p in self.store.root.glob("*") if (p / "config.json").is_file()):
            config = json.loads((folder / "config.json").read_text())
            entries = list(folder.glob(f"{clip.scene_id}.*.safetensors")) or list(folder.glob(f"**/{clip.scene_id}.*.safetensors"))
            for entry in entries:
                stored_id = entry.relative_to(folder).as_posix().removesuffix("." + entry.name.split(".", 1)[1])
                found.setdefault(entry.name == wanted, []).append((config, entry, stored_id))
        exact = [(config, stored_id) for config, _, stored_id in found.get(True, []) if self._matches(config)]
        if len({stored_id for _, stored_id in exact}) > 1:
            raise ValueError(f"{self.store.root}: scenes {sorted({i for _, i in exact})} all match {clip.scene_id!r}; "
                             "name the clip by its path relative to the extracted dataset")
        if len(exact) == 1:
            return self.store.load(exact[0][1], exact[0][0], clip.frame_indices)
        want = f"backbone {self.settings.backbone!r} {self.settings.backbone_options} and frames {clip.frame_indices}"
        if len(exact) > 1:
            raise ValueError(f"{self.store.root}: {len(exact)} stored configurations of {want} for scene "
                             f"{clip.scene_id!r} ({[c.get('weights') for c, _ in exact]}); keep one store per run")
        others = [(c.get("name"), json.loads(read_entry(e, with_tokens=False)[0]["frame_indices"]))
                  for entries in found.values() for c, e, _ in entries]
        if not others:
            raise ValueError(f"{self.store.root}: no stored generative features for scene {clip.scene_id!r} "
                             f"(run `vega3d extract`, or use the online source)")
        raise ValueError(f"{self.store.root}: the stored features of scene {clip.scene_id!r} come from another backbone "
                         f"or frame sampling (backbone, frames: {others}); the model needs {want}")

    def _check(self, clip: Clip, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 4 or tokens.shape[0] != len(clip.images):
            raise ValueError(
                f"frame counts differ between streams for {clip.scene_id!r}: {len(clip.images)} sampled frame(s), "
                f"generative tokens of shape {tuple(tokens.shape)}"
            )
        if tokens.shape[-1] != self.settings.feature_dim:
            raise ValueError(
                f"backbone {self.settings.backbone!r} gives {tokens.shape[-1]}-channel tokens; the model's generative "
                f"branch expects feature_dim={self.settings.feature_dim}"
            )
        return tokens
