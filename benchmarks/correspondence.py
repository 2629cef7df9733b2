"""Speed and memory of the multi-view correspondence score.

Compares the vectorised ``vega3d.analysis.correspondence_score`` with two references measured in the
same process: the *floor* (one plain reduction, ``features.sum()``, over the same [V, N, C] tensor, run
right after each score so the features are not in cache: reading them once is the least any score can
cost) and a straightforward per-voxel loop (kept here only as the exactness and speed reference). Sizes:
the paper's (32 views x 196 tokens x 1536 channels), 1,024 views x 4,096 tokens x 256 channels (loop
skipped: hours), and a token-count sweep to show linear growth. Token coordinates come from the procedural
room (rendered at the token grid), features are random. Each case runs in a fresh subprocess so its peak
memory is its own; times are medians over repeated (score, floor) pairs after one warm-up run. Both run on
torch's threads (``OMP_NUM_THREADS``, default one per core): the floor's reduction, and the score's parts of
views from 128 MiB of features on (below that it reads on one thread).

    python benchmarks/correspondence.py            # prints a table, writes benchmarks/results/correspondence.json
    python benchmarks/correspondence.py --quick    # smaller sweep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the vega3d command sets it (vega3d.cli.main)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from vega3d.io import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "correspondence.json"
REPEATS = 7  # timed (score, floor) pairs after one warm-up; medians are reported
TARGET = 3.0  # score time / floor time


def scene_tokens(views: int, grid: int, channels: int, seed: int = 0):
    from vega3d.scenes.synthetic import camera_path, render_view

    f = 0.9 * grid
    k = np.array([[f, 0, (grid - 1) / 2], [0, f, (grid - 1) / 2], [0, 0, 1]])
    coords = []
    for pose in camera_path(views):
        _, depth = render_view(pose, k, (grid, grid))
        v, u = np.indices(depth.shape, dtype=np.float64)
        cam = np.stack([(u - k[0, 2]) / k[0, 0] * depth, (v - k[1, 2]) / k[1, 1] * depth, depth], -1)
        coords.append(cam @ pose[:3, :3].T + pose[:3, 3])
    coords = torch.from_numpy(np.stack(coords).reshape(views, grid * grid, 3))
    features = torch.randn(views, grid * grid, channels, generator=torch.Generator().manual_seed(seed))
    return features, coords


def loop_reference(features, coords, voxel_size=0.1):
    """The straightforward implementation: one Python iteration per voxel."""
    v, n, c = features.shape
    flat, points = features.reshape(-1, c), coords.reshape(-1, 3)
    view = torch.arange(v).repeat_interleave(n)
    cells = torch.floor((points - points.min(0).values) / voxel_size).long()
    total, pairs = 0.0, 0
    for cell in torch.unique(cells, dim=0):
        inside = (cells == cell).all(-1)
        seen = torch.unique(view[inside])
        if len(seen) < 2:
            continue
        protos = torch.stack([F.normalize(flat[inside & (view == t)].mean(0), dim=0) for t in seen])
        sims = protos @ protos.T
        total += float(sims.triu(1).sum())
        pairs += len(seen) * (len(seen) - 1) // 2
    return total / pairs


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(views: int, grid: int, channels: int, method: str) -> dict:
    from vega3d.analysis import correspondence_score

    features, coords = scene_tokens(views, grid, channels)
    before = rss_bytes()
    run = (lambda: correspondence_score(features, coords).score) if method == "vectorised" else (lambda: loop_reference(features, coords))
    repeats = REPEATS if method == "vectorised" else 1
    times, floors = [], []
    for _ in range(repeats + 1):  # the first call is a warm-up (first-use kernel set-up), not timed
        start = time.perf_counter()
        score = run()
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        features.sum()  # the floor: one plain read of the features, right after the score
        floors.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"views": views, "tokens_per_view": grid * grid, "channels": channels, "method": method,
            "seconds": float(np.median(times[1:])), "floor_seconds": float(np.median(floors[1:])), "score": score,
            "input_mib": features.numel() * 4 / 2**20, "extra_peak_mib": max(0, peak - before) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="skip the largest sizes")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*[int(x) for x in args.case.split(",")[:3]], args.case.split(",")[3])))
        return
    cases = [(32, 14, 1536, "loop"), (32, 14, 1536, "vectorised"), (1024, 64, 256, "vectorised")]
    sweep = [(64, 64, 256), (128, 64, 256), (256, 64, 256)] + ([] if args.quick else [(512, 64, 256)])
    if args.quick:
        cases = cases[:2]
    cases += [(*s, "vectorised") for s in sweep]
    rows = []
    print(f"{'views':>6} {'tokens':>7} {'ch':>5} {'method':>10} {'seconds':>9} {'floor s':>9} {'/floor':>7} {'input MiB':>10} "
          f"{'extra peak MiB':>15} {'score':>10}")
    for case in cases:
        out = subprocess.run([sys.executable, __file__, "--case", ",".join(map(str, case))], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["floor_ratio"] = row["seconds"] / row["floor_seconds"]
        rows.append(row)
        print(f"{row['views']:>6} {row['tokens_per_view']:>7} {row['channels']:>5} {row['method']:>10} {row['seconds']:>9.4f} "
              f"{row['floor_seconds']:>9.4f} {row['floor_ratio']:>7.1f} {row['input_mib']:>10.0f} {row['extra_peak_mib']:>15.0f} "
              f"{row['score']:>10.6f}")
    loop, fast = rows[0], rows[1]
    speedup = loop["seconds"] / fast["seconds"]
    big = [r for r in rows[2:] if r["views"] == 1024 and r["tokens_per_view"] == 4096]
    sweep_rows = [r for r in rows[2:] if r not in big]
    per_token = [r["seconds"] / (r["views"] * r["tokens_per_view"]) * 1e6 for r in sweep_rows]
    print(f"\npaper size: score {fast['seconds'] * 1e3:.2f} ms = {fast['floor_ratio']:.1f}x the floor "
          f"({fast['floor_seconds'] * 1e3:.2f} ms; target <= {TARGET:.0f}x), {speedup:.0f}x faster than the per-voxel loop "
          f"({loop['seconds'] * 1e3:.0f} ms); scores agree to {abs(loop['score'] - fast['score']):.1e}")
    for r in big:
        print(f"1024 x 4096 x 256: score {r['seconds']:.3f} s = {r['floor_ratio']:.1f}x the floor ({r['floor_seconds']:.3f} s)")
    print(f"torch threads: {torch.get_num_threads()} (the floor's reduction; the score's parts from 128 MiB of features)")
    print("microseconds per token along the sweep: " + ", ".join(f"{p:.2f}" for p in per_token) + " (flat = linear growth)")
    result = {"timing": f"median of {REPEATS} (score, floor) pairs after one warm-up, each case in a fresh process",
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()},
              "rows": rows, "paper_size_speedup": speedup, "paper_size_floor_ratio": fast["floor_ratio"],
              "large_floor_ratio": big[0]["floor_ratio"] if big else None, "microseconds_per_token": per_token}
    write_json(RESULTS, result)
    print(f"written: {RESULTS}")


if __name__ == "__main__":
    main()
