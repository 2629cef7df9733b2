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
    parser.add_argument("source", type=Path, help="checkpoint folder (safetensors or PyTorch .bin shards, config.json)")
    parser.add_argument("destination", type=Path, help="new (or empty) output folder")
    parser.add_argument("--layout", help="source layout name (default: detected); `vega3d convert --list` shows them")
    parser.add_argument("--list", action="store_true", help="list the known layouts and exit")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from vega3d.models.convert import LAYOUTS, convert_checkpoint, list_layouts

    if args.list:
        for name in list_layouts():
            print(f"{name}: {LAYOUTS[name].description}")
        return 0
    out = convert_checkpoint(args.source, args.destination, args.layout,
                             progress=lambda shards: tqdm(shards, desc="convert", unit="shard"))
    print(f"{out}: converted from {args.source}")
    return 0
