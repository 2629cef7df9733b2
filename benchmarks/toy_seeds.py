"""The CI-size toy run (tests/training/test_toy.py) over several seeds: does the gated model read the depth?

A short run either reads the depth from the generative stream or answers one word for every held-out clip,
so the test's setting is chosen by this table. Each seed builds its own random base model and adapters.

    python benchmarks/toy_seeds.py [--seeds 0 1 2 3 4] [--epochs 5] [--batch-size 8] [--lr-adapters 3e-2]

Writes benchmarks/results/toy_seeds.json. "passes" applies the test's checks: both losses below a tenth of
their start, gated held-out accuracy above the majority answer and above the baseline by 10 points each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from vega3d.io import write_json

REPO = Path(__file__).resolve().parents[1]
SCENE = Path(os.environ.get("VEGA3D_SHARED_DATA", REPO.parent / "shared" / "data")) / "scenes" / "posed_images" / "hololens_office_000"


def passes(task: dict, gated: dict, baseline: dict) -> bool:
    fits = all(run["last_loss"] < 0.1 * run["first_loss"] for run in (gated, baseline))
    accuracy = gated["eval_accuracy"]
    return fits and accuracy > task["eval_majority"] + 0.1 and accuracy > baseline["eval_accuracy"] + 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr-adapters", type=float, default=3e-2)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the test trains
    import transformers

    from vega3d.training.toy import evaluate_toy_variant, prepare_toy, train_toy_variant

    transformers.logging.set_verbosity_error()  # the table only: no load reports (new adapters) or progress bars
    transformers.utils.logging.disable_progress_bar()

    setting = {"epochs": args.epochs, "batch_size": args.batch_size, "lr_adapters": args.lr_adapters}
    rows, start = [], time.perf_counter()
    print(f"setting: {setting}; tiny RANDOM Qwen2.5-VL per seed, HoloLens scan")
    print(f"{'seed':>4}{'gated':>8}{'baseline':>10}{'majority':>10}  passes")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as work:
            toy = prepare_toy([SCENE], work, seed=seed)
            runs = {}
            for variant in ("gated", "no_generative_branch"):
                with contextlib.redirect_stdout(io.StringIO()):  # the Trainer's loss lines
                    trained = train_toy_variant(toy, variant, **setting)
                runs[variant] = {"first_loss": trained["first_loss"], "last_loss": trained["last_loss"],
                                 **evaluate_toy_variant(toy, trained)}
        row = {"seed": seed, "eval_majority": toy["task"]["eval_majority"], **runs,
               "passes": passes(toy["task"], runs["gated"], runs["no_generative_branch"])}
        rows.append(row)
        print(f"{seed:>4}{runs['gated']['eval_accuracy']:>8.3f}{runs['no_generative_branch']['eval_accuracy']:>10.3f}"
              f"{row['eval_majority']:>10.3f}  {'yes' if row['passes'] else 'no'}", flush=True)
    result = {"setting": setting, "scene": SCENE.name, "seeds": rows, "seconds": time.perf_counter() - start,
              "model": toy["model"], "torch": torch.__version__, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    out = write_json(REPO / "benchmarks" / "results" / "toy_seeds.json", result, sort_keys=True)
    print(f"{sum(r['passes'] for r in rows)} of {len(rows)} seeds pass; wrote {out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
