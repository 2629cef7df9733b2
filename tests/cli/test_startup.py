import json
import subprocess
import sys

HEAVY = ("torch", "numpy", "transformers", "diffusers")


def test_building_the_cli_parser_imports_no_heavy_library():
    # A fresh interpreter: this test process has torch loaded already.
    code = ("import sys, json; from vega3d.cli import build_parser; build_parser(); "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_stable_names_still_import_lazily_from_the_package():
    code = ("import sys, vega3d; assert 'torch' not in sys.modules; "
            "from vega3d import load_backbone, list_backbones, Backbone, register_backbone; "
            "assert issubclass(type(load_backbone('pixels')), Backbone) and 'pixels' in list_backbones(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_unknown_package_attribute_is_an_attribute_error():
    import pytest

    import vega3d

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vega3d.nope
