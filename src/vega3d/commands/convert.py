"""``vega3d convert SRC DST``: an authors' or upstream checkpoint folder -> a folder our classes load."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert an authors' or upstream checkpoint folder into vega3d's layout",
        description="Streams the checkpoint's weight files shard by shard, renames every key with the layout's "
                    "table (an unknown key is an error), rewrites config.json and copies the tokenizer and "
                    "processor files. The layout is detected from the keys unless --layout names it. See "
                    "docs/model.md (checkpoint layouts).")
    parser.add_argument("source", type=Path, nargs="?", help="checkpoint folder (safetensors or PyTorch .bin shards, config.json)")
    parser.add_argument("destination", type=Path, nargs="?", help="new (or empty) output folder")
    parser.add_argument("--layout", help="source layout name (default: detected); `vega3d convert --list` shows them")
    parser.add_argument("--list", action="store_true", help="list the known layouts and exit")
    parser.add_argument("--backbone-weights", metavar="DIR",
                        help="record where the generative backbone's weights are (e.g. the Wan2.1 folder: its config "
                             "and VAE) in the converted config's vega3d section")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from vega3d.models.convert import LAYOUTS, convert_checkpoint, list_layouts

    if args.list:
        for name in list_layouts():
            print(f"{name}: {LAYOUTS[name].description}")
        return 0
    if args.source is None or args.destination is None:
        from vega3d.cli import CommandError

        raise CommandError("give SOURCE and DESTINATION folders (or --list)")
    out = convert_checkpoint(args.source, args.destination, args.layout,
                             progress=lambda shards: tqdm(shards, desc="convert", unit="shard"))
    if args.backbone_weights:
        import json

        from vega3d.io import write_json

        config = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else {}
        if "vega3d" not in config:
            raise ValueError(f"{out}/config.json: no vega3d section to record --backbone-weights in")
        config["vega3d"]["backbone_weights"] = str(Path(args.backbone_weights).resolve())
        write_json(out / "config.json", config, sort_keys=True)
    print(f"{out}: converted from {args.source}")
    return 0
