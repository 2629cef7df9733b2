import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "transformers", "diffusers")


def test_importing_vega3d_and_building_the_cli_parser_imports_no_heavy_library():
    # A fresh interpreter: this test process has torch loaded already.
    code = ("import sys, json, vega3d, vega3d.backbones; from vega3d.cli import build_parser; build_parser(); "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_stable_names_resolve_on_first_use():
    import vega3d
    from vega3d import Backbone, list_backbones, load_backbone, register_backbone  # noqa: F401
    from vega3d.backbones import registry

    assert vega3d.load_backbone is registry.load_backbone and isinstance(load_backbone("pixels"), Backbone)
    assert {"pixels", "position", "wan2.1-t2v-1.3b"} <= set(list_backbones())  # every module registered
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vega3d.nope
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vega3d.backbones.nope


def test_the_command_turns_on_huge_pages_before_torch_allocates_unless_told_not_to(monkeypatch):
    from vega3d.cli import HUGE_PAGES_VARIABLE, main

    monkeypatch.delenv(HUGE_PAGES_VARIABLE, raising=False)
    assert main(["awareness", "--list"]) == 0
    assert os.environ[HUGE_PAGES_VARIABLE] == "1"
    monkeypatch.setenv(HUGE_PAGES_VARIABLE, "0")
    assert main(["awareness", "--list"]) == 0
    assert os.environ[HUGE_PAGES_VARIABLE] == "0"
