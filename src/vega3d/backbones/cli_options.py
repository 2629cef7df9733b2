"""Backbone options on the command line, shared by every command that builds a backbone.

Only options the user gives are passed on, so weight-free backbones never see Wan-only options.
"""

from __future__ import annotations

import argparse
import json


def add_backbone_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backbone options (passed to load_backbone only when given)")
    group.add_argument("--timestep", type=int, help="diffusion timestep index k (Wan default 300)")
    group.add_argument("--block", type=int, help="0-based DiT block whose tokens are kept (Wan default 20)")
    group.add_argument("--grid", type=int, nargs=2, metavar=("H", "W"), help="token grid (default 14 14)")
    group.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="DiT input height width (Wan default 720 1280)")
    group.add_argument("--frame-mode", choices=["per_frame", "clip"], help="one-frame clips (default) or one 4n+1 video")
    group.add_argument("--preset", choices=["paper", "reference"], help="paper (default) or the released code's behaviour")
    group.add_argument("--seed", type=int, help="global noise seed (default 0)")
    group.add_argument("--num-noise-samples", type=int, help="average over this many noise draws (default 1)")
    group.add_argument("--prompt-embedding", help="empty-prompt embedding file (see `vega3d prompt-embedding`)")
    group.add_argument("--dtype", help="float32 or bfloat16 (default: bfloat16 on GPU, float32 on CPU)")
    group.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
    group.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="any other backbone option, e.g. chunk_frames=8 or vae_tiling=true (repeatable)")


_NAMES = ("timestep", "block", "grid", "size", "frame_mode", "preset", "seed", "num_noise_samples", "prompt_embedding",
          "dtype", "device")


def backbone_options(args: argparse.Namespace) -> dict:
    """The options given on the command line, as ``load_backbone`` keyword arguments."""
    options = {name: getattr(args, name) for name in _NAMES if getattr(args, name, None) is not None}
    for item in getattr(args, "option", []):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {item!r}: expected KEY=VALUE")
        options[key.replace("-", "_")] = _parse_value(value)
    return options


def _parse_value(text: str):
    """JSON when it parses (8, 0.5, true, [720, 1280]), else the text itself; as the leaderboard's --option."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
