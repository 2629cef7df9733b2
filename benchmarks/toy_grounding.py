"""Proof that the 3D model's grounding path learns geometry: the toy grounding task in the procedural room.

Trains the same tiny RANDOM-WEIGHT LLaVA-Video 3D model twice (with the gated generative branch, and without
it) with the InfoNCE grounding loss, then scores its held-out choices with score("scanrefer"). See
docs/model3d.md and vega3d.training.toy_grounding.

    python benchmarks/toy_grounding.py [--steps 600] [--seed 0] [--threads 1]
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids contention on shared cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from vega3d.training.toy_grounding import run_toy_grounding

    start = time.perf_counter()
    result = run_toy_grounding(steps=args.steps, seed=args.seed)
    result.update(seconds=time.perf_counter() - start, steps=args.steps, seed=args.seed, threads=args.threads)
    print(f"model: {result['generative_branch']['model']}; {result['train_samples']} training / "
          f"{result['eval_samples']} held-out expressions; chance Acc@0.25 {result['chance_Acc@0.25']:.1f}")
    print(f"{'variant':<24}{'first loss':>12}{'last loss':>12}{'Acc@0.25':>10}{'Acc@0.5':>10}")
    for variant in ("generative_branch", "no_generative_branch"):
        row = result[variant]
        print(f"{variant:<24}{row['first_loss']:>12.3f}{row['last_loss']:>12.3f}{row['Acc@0.25']:>10.1f}{row['Acc@0.5']:>10.1f}")
    out = write_json(REPO / "benchmarks" / "results" / "toy_grounding.json", result, sort_keys=True)
    print(f"wrote {out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
