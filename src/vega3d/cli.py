"""The ``vega3d`` command: a thin layer over the library.

Every module in ``vega3d.commands`` defines ``register(subparsers)``; it is discovered here, so a new
verb is a new file. Command modules import heavy libraries inside their ``run`` functions only.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import vega3d.commands


class CommandError(Exception):
    """An error a user can fix (bad path, bad option): printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vega3d", description="VEGA-3D: video diffusion features as a latent world "
                                     "simulator for 3D-aware multimodal LLMs. `vega3d COMMAND --help` for each verb.")
    parser.add_argument("--version", action="version", version=f"vega3d {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(vega3d.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"vega3d.commands.{info.name}").register(subparsers)
    return parser


def _version() -> str:
    from vega3d import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CommandError, FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"vega3d {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
