"""Reading the users' input files (never modified) and recording what was read: the prepare manifest.

Every output folder holds ``prepare_manifest.json``: for each file written, the step that wrote it, its
options, its record count and SHA-256, and the SHA-256 of every input, so a stale or edited annotation
file shows up as a changed checksum (``vega3d prepare verify DIR`` re-hashes them).
"""

from __future__ import annotations

import re
from pathlib import Path

from vega3d.evaluation.inputs import EvaluationInputError, read_annotations
from vega3d.io import sha256_file, write_json

MANIFEST = "prepare_manifest.json"
SPLITS = ("train", "val", "test")


class PrepareError(ValueError):
    """An input that cannot be prepared; the message names the file and the record, line or id."""


def read_json(path: str | Path, what: str):
    """A JSON input file, through the evaluators' reader (same checks, same messages)."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: {what} file does not exist")
    try:
        return read_annotations(path)
    except EvaluationInputError as error:
        raise PrepareError(str(error)) from None


def read_records(path: str | Path, what: str, required: tuple[str, ...], key: str | None = None,
                 texts: tuple[str, ...] = ()) -> list[dict]:
    """A published list of records (or ``data[key]``); each must carry ``required``, ``texts`` as strings."""
    data = read_json(path, what)
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            raise PrepareError(f"{path}: expected an object with a {key!r} list ({what})")
        data = data[key]
    if not isinstance(data, list):
        raise PrepareError(f"{path}: expected a list of {what} records, got {type(data).__name__}")
    for number, record in enumerate(data):
        missing = [name for name in required if not isinstance(record, dict) or name not in record]
        if missing:
            raise PrepareError(f"{path}: record #{number}: missing field(s) {', '.join(map(repr, missing))}")
        wrong = next((name for name in texts if not isinstance(record[name], str)), None)
        if wrong is not None:
            raise PrepareError(f"{path}: record #{number}: {wrong!r} must be a string, got {record[wrong]!r:.60}")
    return data


def split_of(path: str | Path, split: str | None = None) -> str:
    """``split`` if given, else the split named in the file name (``..._val.json``, ``..._train_...``)."""
    if split is not None:
        if split not in SPLITS:
            raise PrepareError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
        return split
    found = set(re.findall(r"(?:^|[_.\-])(train|val|test)(?=[_.\-]|$)", Path(path).name))
    if len(found) != 1:
        raise PrepareError(f"{path}: cannot tell the split from the file name; pass --split")
    return found.pop()


def describe_input(path: str | Path) -> dict:
    path = Path(path)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def record_outputs(out_dir: str | Path, step: str, inputs: list, options: dict, outputs: dict[str, int]) -> Path:
    """Add (or replace) the entries of ``outputs`` (file name -> record count) in the folder's manifest."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    manifest = read_json(manifest_path, "manifest") if manifest_path.is_file() else {"files": {}}
    described = [describe_input(path) for path in inputs]
    for name, count in outputs.items():
        manifest["files"][name] = {"step": step, "records": count, "sha256": sha256_file(out_dir / name),
                                   "options": options, "inputs": described}
    manifest["files"] = dict(sorted(manifest["files"].items()))
    return write_json(manifest_path, manifest)


def verify_manifest(out_dir: str | Path) -> list[str]:
    """Every input and output of the manifest whose bytes changed (or vanished) since it was written."""
    out_dir = Path(out_dir)
    manifest = read_json(out_dir / MANIFEST, "manifest")
    problems = []
    for name, entry in manifest["files"].items():
        places = [(out_dir / name, entry["sha256"], f"output {name}")]
        places += [(Path(i["path"]), i["sha256"], f"input {i['path']} of {name}") for i in entry["inputs"]]
        for path, digest, label in places:
            if not path.is_file():
                problems.append(f"{label}: missing")
            elif sha256_file(path) != digest:
                problems.append(f"{label}: changed since it was prepared (SHA-256 differs)")
    return problems
