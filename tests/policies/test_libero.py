"""LIBERO helpers: suites, the assets check, the config written before import, safe initial-state loading; CLI errors."""

from __future__ import annotations

import pickle
import sys
import zipfile

import numpy as np
import pytest
import torch
import yaml

from vega3d.cli import main
from vega3d.policies.libero import ASSET_ENTRIES, SUITES, check_suite, find_assets, load_init_states, write_libero_config


def test_suites_and_step_limits():
    assert SUITES == {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400}
    with pytest.raises(ValueError, match="unknown LIBERO suite 'libero_100'; choose from libero_spatial"):
        check_suite("libero_100")


def test_assets_must_be_given_and_complete(tmp_path, monkeypatch):
    monkeypatch.delenv("VEGA3D_LIBERO_ASSETS", raising=False)
    with pytest.raises(FileNotFoundError, match="lerobot/libero-assets"):
        find_assets(None)
    (tmp_path / "scenes").mkdir()
    with pytest.raises(FileNotFoundError, match="not a LIBERO assets folder.*textures"):
        find_assets(tmp_path)
    for entry in ASSET_ENTRIES:
        (tmp_path / entry).mkdir(exist_ok=True)
    monkeypatch.setenv("VEGA3D_LIBERO_ASSETS", str(tmp_path))
    assert find_assets(None) == tmp_path


def test_config_is_written_before_import(tmp_path, monkeypatch):
    package = tmp_path / "site" / "libero"
    (package / "libero").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("LIBERO_CONFIG_PATH", str(tmp_path / "cfg"))
    path = write_libero_config(tmp_path / "assets")
    values = yaml.safe_load(path.read_text())
    assert set(values) == {"benchmark_root", "bddl_files", "init_states", "datasets", "assets"}
    assert values["bddl_files"] == str(package / "libero" / "bddl_files") and values["assets"] == str(tmp_path / "assets")
    sys.modules.pop("libero", None)


def test_init_states_load_with_numpy_allow_list(tmp_path):
    states = np.random.default_rng(0).normal(size=(50, 92))
    torch.save(states, tmp_path / "task.pruned_init")
    np.testing.assert_array_equal(load_init_states(tmp_path / "task.pruned_init"), states)


def test_init_states_written_with_numpy_1(tmp_path):
    """numpy 1 spells the reconstructor numpy.core.multiarray._reconstruct; the allow-list names it too."""
    states = np.arange(6.0).reshape(2, 3)
    torch.save(states, tmp_path / "new.pruned_init")
    with zipfile.ZipFile(tmp_path / "new.pruned_init") as source, zipfile.ZipFile(tmp_path / "old.pruned_init", "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(item, data)
    np.testing.assert_array_equal(load_init_states(tmp_path / "old.pruned_init"), states)


def test_init_states_refuse_other_pickles(tmp_path):
    with open(tmp_path / "evil.pruned_init", "wb") as handle:
        pickle.dump({"callback": print}, handle)
    with pytest.raises(ValueError, match="cannot load the initial states safely"):
        load_init_states(tmp_path / "evil.pruned_init")


def test_cli_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VEGA3D_LIBERO_ASSETS", raising=False)
    assert main(["libero-eval", "--suite", "libero_foo", "--policy", str(tmp_path)]) == 1
    assert "unknown LIBERO suite 'libero_foo'" in capsys.readouterr().err
    assert main(["libero-eval", "--suite", "libero_goal", "--policy", str(tmp_path)]) == 1
    assert "LIBERO scene assets are not given" in capsys.readouterr().err
    assert main(["libero-eval", "--suite", "libero_goal", "--policy", str(tmp_path), "--episodes", "0"]) == 1
    assert "--episodes must be >= 1; got 0" in capsys.readouterr().err
