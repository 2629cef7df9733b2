"""Feature store: backbone tokens computed once per scene and configuration, then read back verified."""

from vega3d.store.encode import encode_scene, encode_tokens, save_tokens
from vega3d.store.features import FeatureStore, StoreError, StoreMiss
from vega3d.store.pipeline import ExtractionResult, extract_scenes
from vega3d.store.sharding import barrier, rank_and_world_size, shard

__all__ = ["ExtractionResult", "FeatureStore", "StoreError", "StoreMiss", "barrier", "encode_scene", "encode_tokens",
           "extract_scenes", "rank_and_world_size", "save_tokens", "shard"]
