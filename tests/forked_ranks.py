"""Real ranks without the interpreter start-up: ``vega3d.cli.main(argv)`` in forked copies of this process.

Each rank is a separate process with torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``: env:// rendezvous, gloo on CPU), so the code under test initialises and
uses a real process group. Forking reuses the modules this process has already imported instead of
importing torch and transformers again in every rank (about 4 s each). The launcher itself is covered by
tests/store/test_feature_store.py, which goes through ``torch.distributed.run``.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank(environment: dict, argv: list, log: Path) -> None:
    os.environ.update(environment)
    stream = open(log, "w", buffering=1)  # this rank's output (Python's and native), for the caller's message
    os.dup2(stream.fileno(), 1)
    os.dup2(stream.fileno(), 2)
    sys.stdout = sys.stderr = stream  # not the test's capture, which the fork copied
    import torch

    from vega3d.cli import main

    torch.set_num_threads(1)  # like OMP_NUM_THREADS=1, which torchrun sets for several ranks per machine
    code = main(argv)
    stream.flush()
    sys.exit(code)


def run_forked_ranks(argv: list[str], log_dir: Path, world_size: int = 2, timeout: float = 120) -> list[str]:
    """Run the CLI as ``world_size`` ranks; returns each rank's output; raises naming the rank that failed."""
    context = multiprocessing.get_context("fork")
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(world_size),
              "LOCAL_WORLD_SIZE": str(world_size), "GROUP_RANK": "0"}
    logs = [Path(log_dir) / f"rank{rank}.log" for rank in range(world_size)]
    sys.stdout.flush()
    sys.stderr.flush()  # or the ranks would write this process's buffered output again
    ranks = [context.Process(target=_rank, args=({**common, "RANK": str(rank), "LOCAL_RANK": str(rank)}, argv, log))
             for rank, log in enumerate(logs)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout)
    for process in ranks:
        if process.is_alive():
            process.kill()
            process.join()
    outputs = [log.read_text() if log.exists() else "" for log in logs]
    for rank, (process, output) in enumerate(zip(ranks, outputs)):
        if process.exitcode != 0:
            raise AssertionError(f"rank {rank}/{world_size} exited with {process.exitcode}:\n{output[-3000:]}")
    return outputs
