"""Start-up time of the ``vega3d`` command: whole processes, median of several runs.

``vega3d --help`` and every ``vega3d VERB --help`` must not import torch, transformers or diffusers
(target <= 0.3 s); ``import torch`` alone is timed alongside as the cost avoided.

    python benchmarks/startup.py [--repeats 7]     # prints a table, writes benchmarks/results/startup.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vega3d.io import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"
TARGET_S = 0.3


def timed(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from vega3d.cli import build_parser

    verbs = sorted(build_parser()._subparsers._group_actions[0].choices)
    cli = [sys.executable, "-m", "vega3d.cli"]
    cases = {"vega3d --help": cli + ["--help"]} | {f"vega3d {verb} --help": cli + [verb, "--help"] for verb in verbs}
    cases["python -c 'import torch' (avoided)"] = [sys.executable, "-c", "import torch"]
    rows = []
    print(f"{'command':<40} {'median s':>9} {'target':>7}")
    for name, command in cases.items():
        seconds = timed(command, args.repeats)
        ok = "avoided" in name or seconds <= TARGET_S
        rows.append({"command": name, "median_seconds": seconds, "within_target": ok})
        print(f"{name:<40} {seconds:>9.3f} {'' if 'avoided' in name else ('ok' if ok else 'SLOW'):>7}")
    write_json(RESULTS, {"timing": f"median of {args.repeats} whole processes", "target_seconds": TARGET_S,
                         "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}, "rows": rows})
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
