"""The feature store: backbone tokens computed once per scene and configuration, verified on every read.

Layout::

    STORE/index.json                                  consolidated index (written at the end of a run)
    STORE/<config key>/config.json                    the backbone configuration, readable
    STORE/<config key>/<scene id>.<T>f-<hash>.safetensors

``config key`` is a hash of the backbone configuration (``backbone.config()``); the file name carries the
scene id and a hash of the frame indices. A scene id is the scene folder's path relative to the dataset
root (``a/scene0``), so two folders of the same name in one dataset never share an entry; its parts
become sub-folders. Each file holds one tensor ``tokens [T, h, w, C]`` and metadata:
backbone configuration, frame indices, seed, library versions and a SHA-256 of the token bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import torch

from vega3d.io import save_safetensors, write_json

FORMAT = "vega3d-features/1"
TOKENS = "tokens"
INDEX = "index.json"
FAILED = "failed"  # STORE/failed/rank<r>.json: scenes a rank could not encode (its last run); gathered in index.json


class StoreMiss(KeyError):
    """No features stored for this scene, configuration and frames (compute them: ``vega3d extract``)."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


class StoreError(ValueError):
    """A stored file is corrupt or does not match what was asked for; the message names the file."""


def canonical_json(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def config_key(backbone_config: dict) -> str:
    return hashlib.sha256(canonical_json(backbone_config).encode()).hexdigest()[:16]


def content_hash(tokens: torch.Tensor) -> str:
    tokens = tokens.detach().cpu().contiguous()
    header = f"{str(tokens.dtype)}:{list(tokens.shape)}:".encode()
    return hashlib.sha256(header + tokens.view(torch.uint8).numpy().tobytes()).hexdigest()


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("vega3d", "torch", "diffusers", "transformers", "safetensors"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "absent"
    return found


class FeatureStore:
    """``save`` / ``load`` / ``contains`` per (scene id, backbone config, frame indices); LRU read cache."""

    def __init__(self, root, cache_items: int = 8):
        self.root = Path(root)
        self.cache_items = int(cache_items)
        self._cache: OrderedDict[Path, torch.Tensor] = OrderedDict()

    def path(self, scene_id: str, backbone_config: dict, frame_indices) -> Path:
        parts = scene_id.split("/") if isinstance(scene_id, str) else [""]
        if any(not part or part.startswith(".") or "\\" in part for part in parts):
            raise ValueError(f"scene_id {scene_id!r} cannot name a file (a relative path: no empty part, no "
                             "part with a leading dot, no backslash)")
        frames = [int(i) for i in frame_indices]
        frames_hash = hashlib.sha256(canonical_json(frames).encode()).hexdigest()[:12]
        return self.root / config_key(backbone_config) / f"{scene_id}.{len(frames)}f-{frames_hash}.safetensors"

    def save(self, scene_id: str, backbone_config: dict, frame_indices, tokens: torch.Tensor, metadata=None) -> Path:
        """Write atomically (temp name, then rename): a killed run never leaves a half-written file."""
        frames = [int(i) for i in frame_indices]
        if tokens.ndim != 4 or tokens.shape[0] != len(frames):
            raise ValueError(f"tokens must be [T={len(frames)}, h, w, C] for {len(frames)} frame indices; got {tuple(tokens.shape)}")
        path = self.path(scene_id, backbone_config, frames)
        tokens = tokens.detach().cpu().contiguous()
        config_file = self.root / config_key(backbone_config) / "config.json"
        if not config_file.exists():
            write_json(config_file, backbone_config, sort_keys=True)
        header = {
            "format": FORMAT, "scene_id": scene_id, "backbone_config": canonical_json(backbone_config),
            "config_key": config_key(backbone_config), "frame_indices": canonical_json(frames),
            "seed": str(backbone_config.get("seed", "")), "versions": canonical_json(library_versions()),
            "content_hash": content_hash(tokens), "metadata": canonical_json(metadata or {}),
        }
        save_safetensors({TOKENS: tokens}, path, header)
        self._remember(path, tokens)
        return path

    def load(self, scene_id: str, backbone_config: dict, frame_indices) -> torch.Tensor:
        """The stored tokens (shared with the cache: do not modify in place). ``StoreMiss`` when absent,
        ``StoreError`` when the file is corrupt or was written for another scene/configuration/frames."""
        path = self.path(scene_id, backbone_config, frame_indices)
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        if not path.is_file():
            raise StoreMiss(f"{path}: no stored features for scene {scene_id!r} with this configuration (run `vega3d extract`)")
        header, tokens = read_entry(path, with_tokens=True)
        expected = {"scene_id": scene_id, "backbone_config": canonical_json(backbone_config),
                    "frame_indices": canonical_json([int(i) for i in frame_indices])}
        for key, value in expected.items():
            if header.get(key) != value:
                raise StoreError(f"{path}: stored {key} {header.get(key)} does not match the requested {value}")
        self._remember(path, tokens)
        return tokens

    def contains(self, scene_id: str, backbone_config: dict, frame_indices) -> bool:
        try:
            self.load(scene_id, backbone_config, frame_indices)
        except StoreMiss:
            return False
        return True

    def record_failures(self, failed: list[dict], rank: int = 0) -> None:
        """Keep the scenes this rank could not encode (replacing its previous list; none: no file)."""
        path = self.root / FAILED / f"rank{rank}.json"
        if failed:
            write_json(path, failed)
        elif path.is_file():
            path.unlink()

    def build_index(self) -> Path:
        """Scan every stored file's header and write ``index.json`` (atomic); corrupt files and the scenes
        that failed in the last run of each rank are listed apart."""
        failed = [item for path in sorted((self.root / FAILED).glob("rank*.json")) for item in json.loads(path.read_text())]
        entries, configs, corrupt = [], {}, []
        for path in sorted(self.root.glob("*/**/*.safetensors")):
            try:
                header = read_entry(path, with_tokens=False)[0]
            except StoreError as error:
                corrupt.append({"file": str(path.relative_to(self.root)), "error": str(error)})
                continue
            configs[header["config_key"]] = json.loads(header["backbone_config"])
            entries.append({"file": str(path.relative_to(self.root)), "scene_id": header["scene_id"],
                            "config_key": header["config_key"], "frame_indices": json.loads(header["frame_indices"]),
                            "shape": header["shape"], "content_hash": header["content_hash"]})
        return write_json(self.root / INDEX, {"format": FORMAT, "configs": configs, "entries": entries, "corrupt": corrupt,
                                                 "failed": failed},
                          sort_keys=True)

    def _remember(self, path: Path, tokens: torch.Tensor) -> None:
        if self.cache_items <= 0:
            return
        self._cache[path] = tokens
        self._cache.move_to_end(path)
        while len(self._cache) > self.cache_items:
            self._cache.popitem(last=False)


def read_entry(path: Path, with_tokens: bool) -> tuple[dict, torch.Tensor | None]:
    """Header (with the tokens' shape) and, if asked, the tokens, checked against the stored content hash."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as reader:
            header = dict(reader.metadata() or {})
            if header.get("format") != FORMAT or TOKENS not in reader.keys():
                raise StoreError(f"{path}: not a vega3d feature file (format {header.get('format')!r})")
            header["shape"] = list(reader.get_slice(TOKENS).get_shape())
            tokens = reader.get_tensor(TOKENS) if with_tokens else None
    except (SafetensorError, OSError, RuntimeError) as error:
        raise StoreError(f"{path}: corrupt feature file ({error}); delete it and run `vega3d extract` again") from None
    if tokens is not None and content_hash(tokens) != header.get("content_hash"):
        raise StoreError(f"{path}: content hash mismatch (file corrupted after writing); delete it and run `vega3d extract` again")
    return header, tokens
