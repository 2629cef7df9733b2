"""Sharding scenes over processes and machines (``torchrun``): rank r takes every world-th scene."""

from __future__ import annotations

import os


def rank_and_world_size() -> tuple[int, int]:
    """``RANK`` and ``WORLD_SIZE`` from the environment (set by torchrun); (0, 1) when run alone."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise ValueError(f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world})")
    return rank, world


def shard(items: list, rank: int, world_size: int) -> list:
    """Round-robin share of ``items`` (sorted by the caller): disjoint, together complete, balanced."""
    return items[rank::world_size]


def barrier(world_size: int) -> None:
    """Wait for every rank (gloo process group, from torchrun's environment); no-op when alone."""
    if world_size == 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise ValueError(f"WORLD_SIZE={world_size} but MASTER_ADDR is unset: launch with torchrun")
        dist.init_process_group("gloo")
    dist.barrier()
