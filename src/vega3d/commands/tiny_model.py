"""``vega3d tiny-model NAME FOLDER``: a tiny random-weight model of a zoo backbone's real library class.

For trying the commands without downloading weights; everything built from it is labelled RANDOM WEIGHTS.
"""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("tiny-model", help="write a tiny random-weight model of a zoo backbone (for trying the tools)",
                              description=__doc__)
    p.add_argument("name", help="backbone name, e.g. sd2.1 or dinov3-vitl16")
    p.add_argument("folder", type=Path, help="output folder (must not exist yet)")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from vega3d.backbones.tiny import TINY_OPTIONS, save_tiny_model
    from vega3d.cli import CommandError

    if args.name not in TINY_OPTIONS:
        raise CommandError(f"no tiny model for {args.name!r}; available: {', '.join(TINY_OPTIONS)}")
    if args.folder.exists():
        raise CommandError(f"{args.folder}: already exists; choose a new folder")
    save_tiny_model(args.name, args.folder, seed=args.seed)
    options = " ".join(f"--option {key}={json.dumps(value, separators=(',', ':'))}" for key, value in TINY_OPTIONS[args.name].items())
    print(f"wrote a RANDOM-WEIGHT tiny {args.name} to {args.folder}; try:\n"
          f"  vega3d awareness SCENES --backbone {args.name} --weights {args.folder} {options}")
    return 0
