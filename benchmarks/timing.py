"""The one in-process timer the CPU benchmarks share: median wall seconds of repeated calls."""

from __future__ import annotations

import statistics
import time


def median_seconds(fn, repeats: int, warmup: bool = True) -> float:
    """Median wall time of ``repeats`` calls of ``fn``, after one untimed call when ``warmup``."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
