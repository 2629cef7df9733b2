"""``vega3d predict TASK --model DIR --data FILE --out preds.jsonl``: benchmark predictions, resumable and sharded."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    from vega3d.evaluation import predictors, predictors3d  # noqa: F401  (register the built-in tasks)
    from vega3d.evaluation.predict import TASKS

    parser = subparsers.add_parser(
        "predict", help="write a benchmark's predictions (JSONL, one line per sample) with a model",
        description="Runs a model over a benchmark's samples and writes {id, answer, ...} lines that `vega3d eval` "
                    "scores. Resumable (ids already written are skipped); under torchrun/accelerate each rank "
                    "takes its share and the shards are merged into one file in input order. docs/evaluation.md.")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    for task in TASKS.values():
        sub = tasks.add_parser(task.name, help=task.description, description=task.description)
        sub.add_argument("--model", required=True, help="model checkpoint folder (ours, converted or released)")
        sub.add_argument("--data", required=True, help="the benchmark's samples (.parquet, .jsonl or .json)")
        sub.add_argument("--out", required=True, type=Path, help="predictions JSONL (resumed if it exists)")
        sub.add_argument("--device", help="default: cuda if available, else cpu")
        sub.add_argument("--generative-source", default="online", choices=["online", "offline"],
                         help="compute generative features (online) or read them from --store (offline)")
        sub.add_argument("--store", help="feature store folder")
        if task.add_arguments is not None:
            task.add_arguments(sub)
        sub.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from vega3d.cli import CommandError
    from vega3d.evaluation.predict import TASKS, run_predictions
    from vega3d.store.sharding import rank_and_world_size

    task = TASKS[args.task]
    if not Path(args.data).is_file():
        raise CommandError(f"--data {args.data}: no such file")
    if Path(args.out).resolve() == Path(args.data).resolve():
        raise CommandError(f"--out {args.out}: would overwrite the input")
    samples = task.read_samples(args.data)
    rank, world = rank_and_world_size()
    predict = task.build(args)
    out = run_predictions(samples, predict, args.out, rank, world, source=str(args.data),
                          progress=lambda items: tqdm(items, desc=f"{task.name} rank {rank}/{world}", unit="sample"))
    if out is None:
        print(f"rank {rank}: shard done; {args.out} is written when every rank has finished")
    else:
        print(f"wrote {out}: {len(samples)} predictions ({task.name})")
    return 0
