"""Task-grouped batches (the released ``group_by_task_length``): every optimiser step holds one task.

Tasks: QA (ScanQA, SQA3D) = 0, Scan2Cap = 1, grounding (ScanRefer, Multi3DRefer) = 2, so a step is
either all-LM-loss QA, all captioning or all InfoNCE grounding. Per epoch, from an explicit seed:

1. each task's samples are permuted and cut into megabatches of ``M = world_size * accumulation *
   batch_size`` (one optimiser step of the whole job);
2. each megabatch is sorted by length (word count), longest first (ties keep the permuted order);
3. a task's last partial megabatch is ``"pad"``-ded (default: filled up with that task's first samples
   of the epoch, so no sample is lost and every step is full) or ``"drop"``-ped (the released behaviour,
   which loses up to M-1 samples per task and all of a task smaller than M);
4. all megabatches are shuffled together.

Micro-batch ``s`` of a step goes to rank ``r`` as global batch ``s * world_size + r``: the layout of
accelerate's sharded batch sampler, so :class:`TaskGroupedSampler` (the global order, for HF Trainer,
which shards it) and :class:`TaskGroupedBatchSampler` (one rank's batches, for a plain DataLoader)
give every rank the same samples.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler

TASK_IDS = {"scanqa": 0, "sqa3d": 0, "scan2cap": 1, "scanrefer": 2, "multi3drefer": 2}
LAST_MEGABATCH = ("pad", "drop")


def task_id(record: dict) -> int:
    """Task of a processed record (``metadata.dataset``: scanQA, sqa3d, scan2cap, scanrefer, multi3drefer)."""
    dataset = str(record.get("metadata", {}).get("dataset", "")).lower()
    if dataset not in TASK_IDS:
        raise ValueError(f"record {record.get('id')!r}: metadata.dataset {dataset!r} is not one of {', '.join(TASK_IDS)}")
    return TASK_IDS[dataset]


def word_count(record: dict) -> int:
    """The length used for grouping: words in all turns."""
    return sum(len(str(turn.get("value", "")).split()) for turn in record.get("conversations", []))


def task_grouping(records) -> tuple[list[int], list[int]]:
    """``(task ids, lengths)`` of processed records, the inputs of the samplers below."""
    return [task_id(r) for r in records], [word_count(r) for r in records]


def task_megabatches(task_ids, lengths, megabatch_size: int, seed: int, epoch: int = 0, last: str = "pad") -> list[np.ndarray]:
    """The epoch's megabatches (arrays of dataset indices), in training order."""
    task_ids, lengths = np.asarray(task_ids), np.asarray(lengths)
    if task_ids.shape != lengths.shape or task_ids.ndim != 1:
        raise ValueError(f"task_ids and lengths must be 1-D of equal length; got {task_ids.shape} and {lengths.shape}")
    if megabatch_size < 1 or last not in LAST_MEGABATCH:
        raise ValueError(f"megabatch_size must be >= 1 and last one of {LAST_MEGABATCH}; got {megabatch_size}, {last!r}")
    rng = np.random.default_rng([seed, epoch])
    megabatches = []
    for task in np.unique(task_ids):
        members = np.flatnonzero(task_ids == task)
        order = members[rng.permutation(len(members))]
        count = len(order) // megabatch_size if last == "drop" else -(-len(order) // megabatch_size)
        order = np.resize(order, count * megabatch_size)  # "pad": cycles through the permuted order
        for chunk in order.reshape(count, megabatch_size):
            megabatches.append(chunk[np.argsort(-lengths[chunk], kind="stable")])
    if not megabatches:
        raise ValueError(f"no task has a full megabatch of {megabatch_size} samples; use last='pad'")
    return [megabatches[i] for i in rng.permutation(len(megabatches))]


class TaskGroupedSampler(Sampler[int]):
    """The global sample order (all ranks, all micro-steps), for HF Trainer / accelerate to shard.

    Use it as ``Trainer._get_train_sampler``'s result with ``megabatch_size = world_size *
    gradient_accumulation_steps * per_device_train_batch_size``; call ``set_epoch`` each epoch.
    """

    def __init__(self, task_ids, lengths, megabatch_size: int, seed: int = 0, last: str = "pad"):
        self.task_ids, self.lengths = list(task_ids), list(lengths)
        self.megabatch_size, self.seed, self.last, self.epoch = megabatch_size, seed, last, 0
        self._size = sum(len(m) for m in self.megabatches())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def megabatches(self) -> list[np.ndarray]:
        return task_megabatches(self.task_ids, self.lengths, self.megabatch_size, self.seed, self.epoch, self.last)

    def __iter__(self):
        for megabatch in self.megabatches():
            yield from megabatch.tolist()

    def __len__(self) -> int:
        return self._size


class TaskGroupedBatchSampler(Sampler[list[int]]):
    """One rank's micro-batches (``batch_sampler=`` of a DataLoader); each run of ``accumulation``
    consecutive batches is one optimiser step, of one task, on every rank."""

    def __init__(self, task_ids, lengths, batch_size: int, world_size: int = 1, rank: int = 0,
                 accumulation: int = 1, seed: int = 0, last: str = "pad"):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.batch_size, self.world_size, self.rank, self.accumulation = batch_size, world_size, rank, accumulation
        self.order = TaskGroupedSampler(task_ids, lengths, batch_size * world_size * accumulation, seed, last)

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __iter__(self):
        b = self.batch_size
        for megabatch in self.order.megabatches():
            for step in range(self.accumulation):
                start = (step * self.world_size + self.rank) * b
                yield megabatch[start:start + b].tolist()

    def __len__(self) -> int:
        return len(self.order) // (self.batch_size * self.world_size)
