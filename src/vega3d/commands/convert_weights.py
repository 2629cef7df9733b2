"""``vega3d convert-weights FILE``: a pickled state dict (Vmem's ``vmem_weights.pth``, VGGT's ``model.pt``) to
safetensors, once.

The pickle is read with ``torch.load(weights_only=True)`` (tensors only, never code); the tensors and their
names are written unchanged beside it (``vmem_weights.pth`` -> ``vmem_weights.safetensors``), where the
backbones look first. The input is never modified.
"""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("convert-weights", help="convert a pickled checkpoint (.pth/.pt) to safetensors, once",
                              description=__doc__)
    p.add_argument("file", type=Path, help="pickled state dict, e.g. vmem_weights.pth")
    p.add_argument("--out", type=Path, help="output .safetensors (default: FILE with the suffix .safetensors)")
    p.set_defaults(func=run)


def run(args) -> int:
    from vega3d.backbones.checkpoints import PICKLE_SUFFIXES, read_state_dict
    from vega3d.cli import CommandError
    from vega3d.io import save_safetensors

    if args.file.suffix not in PICKLE_SUFFIXES:
        raise CommandError(f"{args.file}: not a pickled checkpoint ({', '.join(PICKLE_SUFFIXES)})")
    out = args.out or args.file.with_suffix(".safetensors")
    if out.suffix != ".safetensors":
        raise CommandError(f"--out {out}: must end in .safetensors")
    if out.exists():
        raise CommandError(f"{out}: already exists; remove it or choose another --out")
    state = read_state_dict(args.file)
    save_safetensors(state, out, metadata={"converted_from": args.file.name})
    print(f"wrote {out}: {len(state)} tensors, {sum(v.numel() for v in state.values()):,} values (from {args.file})")
    return 0
