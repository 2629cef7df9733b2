"""``vega3d inspect CHECKPOINT [--compare-wan WAN_DIR]``: what a checkpoint holds; its DiT against Wan2.1."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect", help="show a checkpoint's layout and generative settings; compare its Wan DiT with Wan2.1",
        description="Prints the checkpoint layout (detected from its keys) and its generative-branch settings. With "
                    "--compare-wan, compares the checkpoint's Wan DiT (released: generative_encoder.tower.model.*; "
                    "converted: generative_dit.safetensors) with the published Wan2.1 weights, per tensor group "
                    "(table, and JSON with --json). See docs/spatial.md.")
    parser.add_argument("checkpoint", help="checkpoint folder (released, converted or ours) or a DiT safetensors file")
    parser.add_argument("--compare-wan", metavar="WAN_DIR", help="published Wan2.1 folder (diffusers or original layout)")
    parser.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from vega3d.cli import CommandError, check_outputs
    from vega3d.io import write_json

    checkpoint = Path(args.checkpoint)
    if not checkpoint.exists():
        raise CommandError(f"{checkpoint}: no such checkpoint folder or file")
    check_outputs({"--json": args.json}, [checkpoint, args.compare_wan], args.overwrite)
    if checkpoint.is_dir():
        from vega3d.models.convert import LAYOUTS, checkpoint_keys, list_layouts

        keys = checkpoint_keys(checkpoint)
        found = [name for name in list_layouts() if LAYOUTS[name].detect(keys)]
        config = json.loads((checkpoint / "config.json").read_text()) if (checkpoint / "config.json").is_file() else {}
        print(f"{checkpoint}: {len(keys)} tensors; layout: {', '.join(found) or 'ours (no upstream layout matches)'}")
        if "vega3d" in config:
            print("generative settings: " + json.dumps(config["vega3d"], sort_keys=True))
        dit = checkpoint / "generative_dit.safetensors"
        if dit.is_file():
            checkpoint = dit  # a converted checkpoint keeps its DiT beside the model
    if args.compare_wan:
        from vega3d.models.dit_compare import compare_dit, report_json, report_table

        reports, summary = compare_dit(checkpoint, Path(args.compare_wan))
        print(report_table(reports, summary))
        if args.json:
            print(f"wrote {write_json(args.json, report_json(reports, summary))}")
    return 0
