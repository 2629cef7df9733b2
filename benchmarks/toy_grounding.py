"""Proof that the 3D model's grounding path learns geometry: the toy grounding task in the procedural room.

Trains the same tiny RANDOM-WEIGHT LLaVA-Video 3D model twice (with the gated generative branch, and without
it) with the InfoNCE grounding loss, then scores its held-out choices with score("scanrefer"). See
docs/model3d.md and vega3d.training.toy_grounding.

    python benchmarks/toy_grounding.py [--steps 600] [--seeds 0 1 2] [--threads 1]

Each seed draws its own boxes, initial weights and batches; the table gives each seed and the mean.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vega3d.io import write_json

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids contention on shared cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from vega3d.training.toy_grounding import run_toy_grounding

    start = time.perf_counter()
    runs = {seed: run_toy_grounding(steps=args.steps, seed=seed) for seed in args.seeds}
    variants = ("generative_branch", "no_generative_branch")
    first = runs[args.seeds[0]]
    result = {"runs": {str(seed): run for seed, run in runs.items()}, "seconds": time.perf_counter() - start,
              "steps": args.steps, "seeds": args.seeds, "threads": args.threads, "model": first[variants[0]]["model"],
              "mean_Acc@0.25": {v: sum(run[v]["Acc@0.25"] for run in runs.values()) / len(runs) for v in variants}}
    print(f"model: {result['model']}; {first['train_samples']} training / {first['eval_samples']} held-out "
          f"expressions per seed; chance Acc@0.25 {first['chance_Acc@0.25']:.1f}")
    print(f"{'seed':<6}{'variant':<24}{'first loss':>12}{'last loss':>12}{'Acc@0.25':>10}")
    for seed, run in runs.items():
        for variant in variants:
            row = run[variant]
            print(f"{seed:<6}{variant:<24}{row['first_loss']:>12.3f}{row['last_loss']:>12.3f}{row['Acc@0.25']:>10.1f}")
    for variant in variants:
        print(f"{'mean':<6}{variant:<24}{'':>24}{result['mean_Acc@0.25'][variant]:>10.1f}")
    out = write_json(REPO / "benchmarks" / "results" / "toy_grounding.json", result, sort_keys=True)
    print(f"wrote {out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
