"""Atomic file output: write to a temporary name in the same folder, flush it to disk, then rename.

A reader sees the old file or the complete new one; a killed job never leaves a half-written file under
the final name. Every writer of the package goes through :func:`atomic_path`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f"{path.suffix}.tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` (any writer that takes a path), then move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, data, sort_keys: bool = False) -> Path:
    return write_text(path, json.dumps(data, indent=2, allow_nan=True, sort_keys=sort_keys) + "\n")


def save_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Tensors (detached, contiguous, on CPU) to a safetensors file, atomically and byte-reproducibly:
    safetensors writes its metadata in hash-map order, so the JSON header is re-written with sorted keys
    (padded to 8 bytes, as the format asks; tensor offsets are relative to the data, so they stay valid)."""
    from safetensors.torch import save

    tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}

    def write(tmp: Path) -> None:
        data = save(tensors, metadata=metadata)
        length = int.from_bytes(data[:8], "little")
        header = json.dumps(json.loads(data[8 : 8 + length]), sort_keys=True, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)
        with open(tmp, "wb") as handle:
            handle.write(len(header).to_bytes(8, "little"))
            handle.write(header)
            handle.write(memoryview(data)[8 + length :])

    return atomic_write(path, write)
