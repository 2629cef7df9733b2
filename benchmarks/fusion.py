"""Cost of each fusion variant: parameters, forward and forward+backward time, tokens out.

    PYTHONPATH=src python benchmarks/fusion.py --dim 3584 --frames 2 --tokens 196

Prints a table and writes benchmarks/results/fusion.json. Inputs are seeded random tokens; the numbers
are about cost only (no model quality is measured here).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from vega3d.fusion import build_fusion, list_fusions
from vega3d.io import write_json
from timing import median_seconds  # benchmarks/timing.py, beside this script

VARIANTS = [("gated", {"preset": "paper"}), ("gated", {"preset": "reference"}), ("gated", {"preset": "residual"}),
            ("only_generative", {}), ("add", {}), ("channel_concat", {}), ("sequence_concat", {}),
            ("cross_attention", {"num_layers": 1}), ("cross_attention", {"num_layers": 3}), ("channel_gated", {}),
            ("weighted", {}), ("instruction_token_gated", {})]


def measure(name: str, options: dict, args) -> dict:
    torch.manual_seed(0)
    fusion = build_fusion(name, args.dim, **options)
    sem = torch.randn(args.frames, args.tokens, args.dim, requires_grad=True)
    gen = torch.randn(args.frames, args.tokens, args.dim, requires_grad=True)
    context = torch.randn(args.dim) if fusion.takes_context else None  # one instruction for all frames
    with torch.no_grad():
        out = fusion(sem, gen, context=context)
        forward = 1000.0 * median_seconds(lambda: fusion(sem, gen, context=context), args.repeats)
    backward = 1000.0 * median_seconds(lambda: fusion(sem, gen, context=context).square().mean().backward(), args.repeats)
    label = name + "".join(f" {key}={value}" for key, value in options.items())
    return {"fusion": label, "parameters": sum(p.numel() for p in fusion.parameters()),
            "tokens_out": out.shape[0] * out.shape[1], "forward_ms": round(forward, 2),
            "forward_backward_ms": round(backward, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=3584, help="token width (3584 = Qwen2/Qwen2.5-7B)")
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=196, help="tokens per frame (196 = 14 x 14)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fusion.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    assert {name for name, _ in VARIANTS} == set(list_fusions())
    rows = [measure(name, options, args) for name, options in VARIANTS]
    print(f"{'fusion':34s} {'params':>12s} {'tokens out':>10s} {'fwd ms':>9s} {'fwd+bwd ms':>11s}")
    for row in rows:
        print(f"{row['fusion']:34s} {row['parameters']:12,d} {row['tokens_out']:10d} {row['forward_ms']:9.2f} "
              f"{row['forward_backward_ms']:11.2f}")
    setup = {"dim": args.dim, "frames": args.frames, "tokens_per_frame": args.tokens, "repeats": args.repeats,
             "threads": args.threads, "dtype": "float32", "device": "cpu", "torch": torch.__version__,
             "machine": platform.processor() or platform.machine()}
    write_json(args.out, {"setup": setup, "results": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
