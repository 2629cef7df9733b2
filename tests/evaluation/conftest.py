"""Helpers that write small benchmark files in their published formats."""

from __future__ import annotations

import json

import pytest

METEOR_TEST = "test_meteor_runs_under_java"


@pytest.fixture(scope="session", autouse=True)
def meteor_started(request):
    """Start METEOR's Java process at the first evaluation test when the METEOR test is to run: loading its
    paraphrase table takes ~6 s (7.5 s of CPU, measured), which then overlaps the tests that run before it
    (tests/conftest.py puts them in one work unit, the METEOR test last) instead of stalling that one test.
    The test still goes through ``_meteor()``, the process cached by the library, and checks its scores."""
    from vega3d.evaluation.captions import _meteor, java_available

    units = getattr(request.config, "workerinput", {}).get("work_units", True)  # set by tests/conftest.py
    if units and java_available() and any(item.originalname == METEOR_TEST for item in request.session.items):
        _meteor()  # elsewhere (xdist without its work units) the METEOR test may run in another process


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
