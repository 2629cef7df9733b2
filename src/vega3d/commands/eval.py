"""``vega3d eval BENCHMARK --predictions FILE --annotations FILE [--out JSON]``."""

from __future__ import annotations

BENCHMARKS = ("scanrefer", "multi3drefer", "scan2cap", "scanqa", "sqa3d", "vsibench")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="score predictions on a benchmark of the paper (Tab. 1 / Tab. 2)",
        description="Score predictions (JSONL, one object per line with 'id') against published "
        "annotations; prints the paper's table row and the full metrics as JSON. Formats: docs/evaluation.md.",
    )
    parser.add_argument("benchmark", choices=BENCHMARKS)
    parser.add_argument("--predictions", required=True, metavar="FILE", help="JSONL predictions")
    parser.add_argument(
        "--annotations", required=True, nargs="+", metavar="FILE",
        help="the benchmark's annotation file (SQA3D: the questions file and the annotations file)",
    )
    parser.add_argument("--out", metavar="JSON", help="also write the metrics to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (Java) for scan2cap/scanqa")
    parser.add_argument("--convention", choices=["field", "released"], default="field",
                        help="scanrefer/scan2cap/scanqa: 'released' = the VEGA-3D release's scripts (IoU + 1e-8 "
                             "denominator, ROUGE-L on its tokenisation, ScanQA EM as a fraction); default: the field's")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from vega3d.cli import CommandError, check_outputs
    from vega3d.evaluation import score, table_row
    from vega3d.io import write_json

    check_outputs({"--out": args.out}, [args.predictions, *args.annotations], overwrite=args.overwrite)

    if len(args.annotations) > 1 and args.benchmark != "sqa3d":
        raise CommandError(f"--annotations: {args.benchmark} takes one file, got {len(args.annotations)}")
    annotations = args.annotations if args.benchmark == "sqa3d" else args.annotations[0]
    options = {"with_meteor": False} if args.no_meteor and args.benchmark in ("scan2cap", "scanqa") else {}
    if args.convention != "field":
        if args.benchmark not in ("scanrefer", "scan2cap", "scanqa"):
            raise CommandError(f"--convention: {args.benchmark} has a single convention (the field's)")
        options["convention"] = args.convention
    metrics = score(args.benchmark, args.predictions, annotations, **options)
    report = {
        "benchmark": args.benchmark,
        "predictions": str(Path(args.predictions).resolve()),
        "annotations": [str(Path(path).resolve()) for path in args.annotations],
        "metrics": metrics,
    }
    print(table_row(args.benchmark, metrics))
    print(json.dumps(metrics, indent=2))
    if args.out:
        print(f"wrote {write_json(args.out, report)}")  # atomic: never a half-written report
    return 0
