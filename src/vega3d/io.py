"""Atomic file output: write to a temporary name in the same folder, flush it to disk, then rename.

A reader sees the old file or the complete new one; a killed job never leaves a half-written file under
the final name. Every writer of the package goes through :func:`atomic_path`. Files are byte-identical for
identical content (JSON keys sorted, safetensors headers sorted) and get the usual permissions of the
user's umask, so a store shared by a group stays readable by it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_GLOB = ".*.tmp"
STALE_AFTER_S = 3600.0  # a temporary this old belongs to a killed run, not to a writer still at work


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 whatever the umask
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder: str | Path, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete the temporaries of :func:`atomic_path` under ``folder`` (any depth) left by killed runs: those
    untouched for ``max_age_s`` seconds (younger ones may belong to another process writing right now)."""
    folder, now, removed = Path(folder), time.time(), []
    if not folder.is_dir():
        return removed
    for path in folder.rglob(TEMPORARY_GLOB):
        try:
            if path.is_file() and now - path.stat().st_mtime > max_age_s:
                path.unlink()
                removed.append(path)
        except OSError:  # its writer finished meanwhile, or the folder is read-only: leave it
            continue
    return removed


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` (any writer that takes a path), then move the result to ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def json_safe(data):
    """``data`` with every non-finite float (NaN, +-inf) replaced by ``None``: JSON has no NaN."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(value) for value in data]
    return data


def write_json(path: str | Path, data, sort_keys: bool = True) -> Path:
    """Strict JSON (NaN and infinities written as ``null``), keys sorted unless asked otherwise."""
    return write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False, sort_keys=sort_keys) + "\n")


def read_json(path: str | Path, what: str = "file"):
    """Parse a JSON file; a truncated or broken one is a ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: broken {what} ({error}); delete it to start that step again") from None


def read_jsonl(path: str | Path) -> Iterator[tuple[int, object]]:
    """``(line number, value)`` of each non-blank line of a JSON Lines file, read lazily (a caller's check of
    line N comes before the parse of line N + 1); a bad line is ``PATH:N: not valid JSON (...)``."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
                yield number, value


def _sort_safetensors_header(path: Path) -> None:
    """safetensors writes its JSON header in hash-map order, different in every process: sort it in place."""
    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        raw = handle.read(size)
        ordered = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(ordered) > size:  # cannot happen for the same content written compactly; never corrupt a file
            raise ValueError(f"{path}: unexpected safetensors header layout")
        handle.seek(8)
        handle.write(ordered + b" " * (size - len(ordered)))  # the format pads its header with spaces


def save_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Tensors (detached, contiguous, on CPU) to a safetensors file, atomically, with a sorted header."""
    from safetensors.torch import save_file

    tensors = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=metadata)
        _sort_safetensors_header(tmp)

    return atomic_write(path, write)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
