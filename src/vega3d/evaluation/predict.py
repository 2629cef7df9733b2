"""Predictions for a benchmark: one JSONL line per sample keyed by ``id``, resumable, sharded by rank.

:func:`run_predictions` is the driver every task shares (``vega3d predict TASK``):

- **one line per sample**, ``{"id": ..., **fields}`` with sorted keys: the format ``vega3d eval`` reads;
- **resumable**: ids already written (in the final file or in this rank's shard) are skipped; a torn last
  line (a job killed mid-write) is cut off and that sample predicted again;
- **sharded** under torchrun / accelerate (``RANK``, ``WORLD_SIZE``): rank r takes samples r, r + W, ...
  and appends to its own shard ``.<out>.rank<r>-of-<W>.jsonl`` beside the output;
- **one deterministic, atomic merge**: once every sample has a line, the output is written to a temporary
  name in input order and renamed, and the shards are removed. The same inputs give the same bytes
  whatever the number of ranks.

A task is registered with :func:`register_task`: a name, how to read its samples, the options it adds to
the command line, and ``build(args) -> predict(sample) -> fields``: one small function per task.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from vega3d.io import write_text


@dataclass(frozen=True)
class PredictTask:
    name: str
    description: str
    #: The data file -> samples (dicts with a unique ``id``), in the order the output is merged.
    read_samples: Callable[..., list[dict]]
    #: ``args`` (the parsed command line) -> ``predict(sample) -> dict`` of the fields written besides ``id``.
    build: Callable
    #: Adds the task's own options to its ``vega3d predict TASK`` parser.
    add_arguments: Callable | None = None


TASKS: dict[str, PredictTask] = {}


def register_task(name: str, description: str, read_samples: Callable, add_arguments: Callable | None = None):
    """Decorator for ``build(args)``: registers the task ``name`` for ``vega3d predict``."""
    def register(build):
        if name in TASKS:
            raise ValueError(f"prediction task {name!r} is registered twice")
        TASKS[name] = PredictTask(name, description, read_samples, build, add_arguments)
        return build
    return register


def shard_path(out: Path, rank: int, world: int) -> Path:
    return out.with_name(f".{out.name}.rank{rank}-of-{world}.jsonl")


def read_lines(path: Path, repair: bool = False) -> dict[str, str]:
    """``{id: line}`` of a predictions file. A torn last line (no newline, or not JSON) is an error, or with
    ``repair`` is cut off the file; a bad line elsewhere is always an error naming the file and line."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    lines, good_end = {}, 0
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        last = good_end + len(raw) == len(data)
        try:
            record = json.loads(raw)
            if not raw.endswith(b"\n") or not isinstance(record, dict) or "id" not in record:
                raise ValueError("not a complete record with an 'id'")
        except ValueError as error:
            if last and repair:
                with open(path, "r+b") as handle:  # a job killed mid-write: drop the partial line
                    handle.truncate(good_end)
                break
            raise ValueError(f"{path} line {number}: {error}") from None
        lines[str(record["id"])] = raw.decode().rstrip("\n")
        good_end += len(raw)
    return lines


def _check_ids(samples: list[dict], source: str) -> list[str]:
    ids, seen = [], set()
    for number, sample in enumerate(samples, start=1):
        if "id" not in sample:
            raise ValueError(f"{source}: sample {number} has no 'id'")
        key = str(sample["id"])
        if key in seen:
            raise ValueError(f"{source}: id {key!r} occurs twice (sample {number})")
        seen.add(key)
        ids.append(key)
    return ids


def run_predictions(samples: list[dict], predict: Callable[[dict], dict], out: str | Path, rank: int | None = None,
                    world_size: int | None = None, progress: Callable[[Iterable], Iterable] = lambda items: items,
                    source: str = "samples") -> Path | None:
    """Predict this rank's share of ``samples`` (skipping those already written), then merge when complete.

    Returns ``out`` once it holds every sample, or None while other ranks' shards are still missing lines
    (the last rank to finish merges; under an initialised ``torch.distributed`` group all ranks wait and
    rank 0 merges).
    """
    out = Path(out)
    if rank is None or world_size is None:
        from vega3d.store.sharding import rank_and_world_size  # the same rule as `vega3d extract`

        rank, world_size = rank_and_world_size()
    ids = _check_ids(samples, source)
    shard = shard_path(out, rank, world_size)
    done = {**read_lines(out), **read_lines(shard, repair=True)}
    unknown = sorted(set(done) - set(ids))
    if unknown:
        raise ValueError(f"{out}: holds predictions for ids not in {source} ({unknown[:3]}); use a new output file")
    todo = [sample for sample in samples[rank::world_size] if str(sample["id"]) not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(shard, "a", encoding="utf-8") as handle:
        for sample in progress(todo):
            fields = predict(sample)
            if "id" in fields:
                raise ValueError(f"task output for {sample['id']!r} must not set 'id' itself")
            handle.write(json.dumps({"id": sample["id"], **fields}, sort_keys=True, ensure_ascii=False) + "\n")
            handle.flush()
    distributed = _barrier()
    if distributed and rank != 0:
        return None
    return merge_predictions(ids, out, world_size)


def merge_predictions(ids: list[str], out: Path, world_size: int) -> Path | None:
    """Write ``out`` in input order from itself and every rank's shard once all ids have a line; None if not."""
    lines = read_lines(out)
    shards = [shard_path(out, r, world_size) for r in range(world_size)]
    try:
        for shard in shards:
            lines.update(read_lines(shard))
    except FileNotFoundError:  # another rank merged (and removed the shards) meanwhile
        return out if len(read_lines(out)) == len(ids) else None
    if any(key not in lines for key in ids):
        return None
    write_text(out, "".join(lines[key] + "\n" for key in ids))
    for shard in shards:
        shard.unlink(missing_ok=True)
    return out


def _barrier() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:
        return False
    if not (dist.is_available() and dist.is_initialized()):
        return False
    dist.barrier()
    return True
