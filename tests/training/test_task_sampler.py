"""Task-grouped batches (fact 27) by their properties, single process and data-parallel."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler, DataLoader, TensorDataset

from vega3d.training.sampler import (TaskGroupedBatchSampler, TaskGroupedSampler, task_grouping, task_id,
                                     task_megabatches, word_count)

RNG = np.random.default_rng(0)
TASKS = np.array([0] * 37 + [1] * 21 + [2] * 50)  # 37 QA, 21 captions, 50 grounding
LENGTHS = RNG.integers(5, 60, size=len(TASKS))


def test_task_and_length_of_processed_records():
    record = {"metadata": {"dataset": "scanQA"}, "conversations": [{"value": "<image> What is it? Answer."}, {"value": "a chair"}]}
    assert task_id(record) == 0 and word_count(record) == 7  # "<image>" counts as a word
    assert [task_id({"metadata": {"dataset": d}}) for d in ("sqa3d", "scan2cap", "scanrefer", "multi3drefer")] == [0, 1, 2, 2]
    records = [record, {"metadata": {"dataset": "scanrefer"}, "conversations": [{"value": "<image>Identify it."}]}]
    assert task_grouping(records) == ([0, 2], [7, 2])
    with pytest.raises(ValueError, match="'vsi' is not one of"):
        task_id({"id": 3, "metadata": {"dataset": "vsi"}})


def test_hand_computed_small_case():
    # one task of 3 with megabatch 2: drop keeps one megabatch; pad keeps two, the second filled by cycling
    dropped = task_megabatches([0, 0, 0], [1, 2, 3], 2, seed=0, last="drop")
    padded = task_megabatches([0, 0, 0], [1, 2, 3], 2, seed=0, last="pad")
    assert len(dropped) == 1 and len(padded) == 2 and sorted(np.concatenate(padded).tolist())[:3] == [0, 1, 2]
    with pytest.raises(ValueError, match="no task has a full megabatch of 4"):
        task_megabatches([0, 0, 0], [1, 2, 3], 4, seed=0, last="drop")


@pytest.mark.parametrize("last", ["drop", "pad"])
def test_megabatch_properties(last):
    size = 8
    megabatches = task_megabatches(TASKS, LENGTHS, size, seed=3, last=last)
    for megabatch in megabatches:
        assert len(megabatch) == size and len(set(TASKS[megabatch])) == 1
        assert (np.diff(LENGTHS[megabatch]) <= 0).all()  # longest first
    per_task = Counter(int(TASKS[m[0]]) for m in megabatches)
    counts = Counter(TASKS.tolist())
    expected = {t: (n // size if last == "drop" else -(-n // size)) for t, n in counts.items()}
    assert dict(per_task) == expected
    seen = np.concatenate(megabatches)
    if last == "drop":
        assert len(set(seen.tolist())) == len(seen)  # no sample twice
    else:
        assert set(seen.tolist()) == set(range(len(TASKS)))  # every sample at least once
        assert max(Counter(seen.tolist()).values()) == 2
    tasks_in_order = [int(TASKS[m[0]]) for m in megabatches]
    assert tasks_in_order != sorted(tasks_in_order)  # megabatches of the tasks are shuffled together


def test_seeded_and_per_epoch():
    order = lambda seed, epoch: np.concatenate(task_megabatches(TASKS, LENGTHS, 8, seed, epoch)).tolist()
    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(2, 0) and order(1, 0) != order(1, 1)
    sampler = TaskGroupedSampler(TASKS, LENGTHS, 8, seed=1)
    assert list(sampler) == order(1, 0) and len(sampler) == len(order(1, 0))
    sampler.set_epoch(1)
    assert list(sampler) == order(1, 1)


@pytest.mark.parametrize("world,accumulation,batch", [(2, 2, 2), (4, 1, 3), (1, 4, 2)])
def test_data_parallel_ranks_match_accelerate_and_keep_one_task_per_step(world, accumulation, batch):
    ranks = [list(TaskGroupedBatchSampler(TASKS, LENGTHS, batch, world, r, accumulation, seed=5)) for r in range(world)]
    assert len({len(batches) for batches in ranks}) == 1  # every rank takes the same number of steps
    assert len(ranks[0]) == len(TaskGroupedBatchSampler(TASKS, LENGTHS, batch, world, 0, accumulation, seed=5))
    # the same split as accelerate gives the global order under HF Trainer
    order = TaskGroupedSampler(TASKS, LENGTHS, world * accumulation * batch, seed=5)
    for rank in range(world):
        shard = BatchSamplerShard(BatchSampler(order, batch, drop_last=False), num_processes=world, process_index=rank)
        assert list(shard) == ranks[rank]
    megabatches = order.megabatches()
    for step in range(len(ranks[0]) // accumulation):
        micro = [b for r in range(world) for b in ranks[r][step * accumulation:(step + 1) * accumulation]]
        indices = sorted(i for b in micro for i in b)
        assert indices == sorted(megabatches[step].tolist())  # the step's samples, split without overlap
        assert len(set(TASKS[indices])) == 1  # one task per optimiser step across all ranks


def test_real_dataloader_batches():
    dataset = TensorDataset(torch.arange(len(TASKS)), torch.as_tensor(TASKS))
    loader = DataLoader(dataset, batch_sampler=TaskGroupedBatchSampler(TASKS, LENGTHS, 4, world_size=2, rank=1, seed=0))
    batches = list(loader)
    assert all(len(torch.unique(tasks)) == 1 and len(index) == 4 for index, tasks in batches)
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\)"):
        TaskGroupedBatchSampler(TASKS, LENGTHS, 4, world_size=2, rank=2)
