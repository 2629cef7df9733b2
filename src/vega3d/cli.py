"""The ``vega3d`` command: a thin layer over the library.

Every module in ``vega3d.commands`` defines ``register(subparsers)``; it is discovered here, so a new
verb is a new file. Command modules import heavy libraries inside their ``run`` functions only.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from contextlib import contextmanager

import vega3d.commands


class CommandError(Exception):
    """An error a user can fix (bad path, bad option): printed without a traceback."""


HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"  # torch's switch; 0 turns it off
DEBUG_VARIABLE = "VEGA3D_DEBUG"  # set (to anything but 0/empty), or pass --debug, to see tracebacks


def check_device(device: str | None, option: str = "--device") -> None:
    """Fail before any work on a device name PyTorch does not know or this machine lacks."""
    if device is None:
        return
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise CommandError(f"{option} {device!r}: not a torch device (cpu, cuda, cuda:N, mps)") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(kind, False):
        raise CommandError(f"{option} {device!r}: no such device on this machine"
                           + (" (this PyTorch build has no CUDA)" if kind == "cuda" and not torch.backends.cuda.is_built() else ""))


@contextmanager
def loading(what: str):
    """Turn a failure to load weights (OSError, a broken config.json, safetensors' own error on a corrupt
    file) into one error naming ``what``."""
    try:
        yield
    except CommandError:
        raise
    except Exception as error:
        if not isinstance(error, (OSError, ValueError, RuntimeError)) and type(error).__name__ != "SafetensorError":
            raise
        raise CommandError(f"{what}: cannot load ({' '.join(str(error).split())})") from None


def check_outputs(outputs: dict, inputs, overwrite: bool = False, folders: tuple[str, ...] = ()) -> None:
    """Before any work: no output is an input (compared resolved), an output folder is not a file, and an
    existing output file is replaced only with ``--overwrite``. ``outputs`` maps option names to paths."""
    from pathlib import Path

    sources = {Path(p).resolve(): p for p in inputs if p is not None}
    for option, path in outputs.items():
        if path is None:
            continue
        path = Path(path)
        resolved = path.resolve()
        if resolved in sources:
            raise CommandError(f"{option} {path}: is an input of this command ({sources.get(resolved, path)}); choose another path")
        if option in folders:
            if path.exists() and not path.is_dir():
                raise CommandError(f"{option} {path}: exists and is not a folder")
        elif path.is_dir():
            raise CommandError(f"{option} {path}: is a folder; give a file name")
        elif path.exists() and not overwrite:
            raise CommandError(f"{option} {path}: already exists; pass --overwrite to replace it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vega3d", description="VEGA-3D: video diffusion features as a latent world "
                                     "simulator for 3D-aware multimodal LLMs. `vega3d COMMAND --help` for each verb.")
    parser.add_argument("--version", action="version", version=f"vega3d {_version()}")
    parser.add_argument("--debug", action="store_true", help=f"show Python tracebacks (or set {DEBUG_VARIABLE}=1)")
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
    import os

    # Transparent huge pages for torch's large CPU tensors (read when torch first allocates, so before any
    # verb imports it): a fresh 56 MB frame stack otherwise faults every 4 KiB page. Tensors of 2-32 MB pay
    # for them instead (glibc would reuse freed heap memory); the README's Measured section has both sides.
    os.environ.setdefault(HUGE_PAGES_VARIABLE, "1")
    debug = args.debug or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"vega3d {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line for the user; the traceback behind --debug / VEGA3D_DEBUG
        if debug:
            raise
        user_error = isinstance(error, (CommandError, OSError, ValueError, KeyError, TypeError, RuntimeError))
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error) or type(error).__name__
        message = " ".join(str(message).split())  # one line, whatever the library wrote
        hint = "" if user_error else f" ({type(error).__name__}; run with --debug for the traceback)"
        print(f"vega3d {args.command}: error: {message}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
