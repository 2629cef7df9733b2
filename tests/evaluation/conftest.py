"""Helpers that write small benchmark files in their published formats."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def write_jsonl(tmp_path):
    """``write_jsonl(name, records)`` -> path of a JSONL file (strings are written as raw lines)."""

    def write(name, records):
        path = tmp_path / name
        lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
        path.write_text("".join(line + "\n" for line in lines))
        return path

    return write


@pytest.fixture
def write_json(tmp_path):
    def write(name, data):
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return path

    return write
