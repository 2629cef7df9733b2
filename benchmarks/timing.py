"""The in-process timers the CPU benchmarks share: median wall seconds of repeated calls."""

from __future__ import annotations

import statistics
import time


def median_seconds(fn, repeats: int, warmup: bool = True, clock=time.perf_counter) -> float:
    """Median time of ``repeats`` calls of ``fn``, after one untimed call when ``warmup``: wall seconds, or
    what ``clock`` counts (``time.process_time``: CPU seconds of all the process's threads)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def interleaved_median_seconds(fns: dict, repeats: int) -> dict:
    """Median wall time of each of ``fns`` (name -> callable) over ``repeats`` rounds that call them in turn,
    after one untimed round: a stage and its reference then see the same machine state (page cache,
    frequency, neighbours on a shared host), so their ratio drifts less than that of two separate series."""
    times = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
