"""``vega3d gates GATES.safetensors``: draw the per-token fusion gate over the frames it was computed on."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "gates",
        help="overlay per-token fusion gate values on their frames (PNG)",
        description="Reads a gates file written by vega3d.fusion.save_gates (tensors frames [T,3,H,W] and "
                    "gates [T,h,w]; metadata model, weights, random_weights) and writes a PNG grid of the "
                    "frames with the gate as a heat map. See docs/fusion.md.",
    )
    parser.add_argument("gates_file", type=Path, help="safetensors file with frames, gates and metadata")
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: next to the gates file, .png)")
    parser.add_argument("--columns", type=int, default=None, help="frames per row (default: up to 8)")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the heat map in (0, 1] (default 0.5)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    parser.set_defaults(func=run)


def run(args) -> int:
    from vega3d.cli import CommandError, check_outputs
    from vega3d.fusion.gates import load_gates, plot_gates

    if not 0.0 < args.alpha <= 1.0:
        raise CommandError(f"--alpha must lie in (0, 1]; got {args.alpha}")
    if args.columns is not None and args.columns < 1:
        raise CommandError(f"--columns must be positive; got {args.columns}")
    out = args.out or args.gates_file.with_suffix(".png")
    if out.suffix.lower() != ".png":
        raise CommandError(f"--out must end in .png; got {out}")
    check_outputs({"--out": out}, [args.gates_file], overwrite=args.overwrite)
    record = load_gates(args.gates_file)
    title = record.title
    if "question" in record.metadata:
        title += f"\nQ: {record.metadata['question']}"
    plot_gates(record.frames, record.gates, out, title, columns=args.columns, alpha=args.alpha)
    gates = record.gates
    print(f"{out}: {len(gates)} frames, {gates.shape[1]}x{gates.shape[2]} tokens; gate mean {float(gates.mean()):.3f}, "
          f"min {float(gates.min()):.3f}, max {float(gates.max()):.3f} ({title.splitlines()[0]})")
    return 0
