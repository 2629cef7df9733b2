"""Proof that the generative branch is learned and used: the toy geometry task on the real scans.

Trains the same tiny RANDOM Qwen2.5-VL twice (with the gated generative branch, and without it) on
questions answered by depth, then scores greedy answers on held-out clips. See docs/training.md.

    python benchmarks/toy_geometry.py [--epochs 20] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from vega3d.io import write_json

REPO = Path(__file__).resolve().parents[1]
SCENES = Path(os.environ.get("VEGA3D_SHARED_DATA", REPO.parent / "shared" / "data")) / "scenes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids contention on shared cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from vega3d.training.toy import run_toy

    scenes = [SCENES / "posed_images" / "hololens_office_000", SCENES / "scannet_export" / "tabletop_000"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        result = run_toy(scenes, work, epochs=args.epochs, seed=args.seed)
    result.update(seconds=time.perf_counter() - start, epochs=args.epochs, seed=args.seed, threads=args.threads)
    print(f"model: {result['model']}; generative stream: {result['generative_backbone']}; fusion: {result['fusion']}")
    print(f"task: {result['task']['train']} training / {result['task']['eval']} held-out questions; "
          f"held-out majority answer: {result['task']['eval_majority']:.3f}")
    print(f"{'variant':<24}{'first loss':>12}{'last loss':>12}{'held-out acc.':>15}{'Near or far?':>14}{'Left half?':>12}")
    for variant in ("gated", "no_generative_branch"):
        row = result[variant]
        by = row["eval_accuracy_by_question"]
        print(f"{variant:<24}{row['first_loss']:>12.3f}{row['last_loss']:>12.3f}{row['eval_accuracy']:>15.3f}"
              f"{by['view']:>14.3f}{by['left']:>12.3f}")
    out = write_json(REPO / "benchmarks" / "results" / "toy_geometry.json", result, sort_keys=True)
    print(f"wrote {out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
