"""Feature store: backbone tokens computed once per scene and configuration, then read back verified."""

from vega3d.store.encode import encode_scene
from vega3d.store.features import FeatureStore, StoreError, StoreMiss
from vega3d.store.sharding import barrier, rank_and_world_size, shard

__all__ = ["FeatureStore", "StoreError", "StoreMiss", "barrier", "encode_scene", "rank_and_world_size", "shard"]
