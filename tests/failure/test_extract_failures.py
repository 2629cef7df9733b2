"""`vega3d extract`: unique scene identities, bad scenes skipped and retried, checks before work,
byte-identical files with the umask's permissions, stale temporaries removed."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
from safetensors import safe_open

from vega3d.cli import main


def extract(dataset, store, *extra):
    return main(["extract", str(dataset), "--backbone", "test-failure-counting", "--out", str(store), "--frames", "3",
                 "--image-size", "32", "32", *extra])


def stored(store):
    return sorted(p.relative_to(store).as_posix().split("/", 1)[1] for p in store.glob("*/**/*.safetensors"))


def test_same_named_scenes_get_their_own_entries(dataset, tmp_path, counting):
    store = tmp_path / "store"
    assert extract(dataset, store) == 0
    assert counting.calls == ["a/scene0", "b/scene0"]
    files = stored(store)
    assert [f.split(".")[0] for f in files] == ["a/scene0", "b/scene0"]
    tokens = []
    for name in files:
        with safe_open(str(next(store.glob(f"*/{name}"))), "pt") as reader:
            tokens.append(reader.get_tensor("tokens"))
    assert not (tokens[0] == tokens[1]).all()  # b's features are b's, not a copy of a's
    index = json.loads((store / "index.json").read_text())
    assert sorted(e["scene_id"] for e in index["entries"]) == ["a/scene0", "b/scene0"]


def test_a_bad_scene_is_reported_and_only_it_is_retried(dataset, tmp_path, counting, capsys):
    store = tmp_path / "store"
    good = (dataset / "b" / "scene0" / "00011.jpg").read_bytes()
    (dataset / "b" / "scene0" / "00011.jpg").write_bytes(b"broken")
    assert extract(dataset, store) == 3
    assert "b/scene0/00011.jpg: cannot read image" in capsys.readouterr().err
    index = json.loads((store / "index.json").read_text())
    assert [e["scene_id"] for e in index["entries"]] == ["a/scene0"]
    assert [f["scene_id"] for f in index["failed"]] == ["b/scene0"] and "00011.jpg" in index["failed"][0]["error"]
    (dataset / "b" / "scene0" / "00011.jpg").write_bytes(good)
    counting.calls.clear()
    assert extract(dataset, store) == 0
    assert counting.calls == ["b/scene0"]
    assert json.loads((store / "index.json").read_text())["failed"] == []


def test_outputs_and_options_are_checked_before_any_work(dataset, tmp_path, counting, capsys):
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    cases = [
        ((existing,), f"--out {existing}: exists and is not a folder"),
        ((dataset,), "is an input of this command"),
        ((tmp_path / "s", "--option", "bogus=1"), "backbone 'test-failure-counting': <lambda>() got an unexpected keyword argument 'bogus'"),
        ((tmp_path / "s", "--device", "tpu"), "--device 'tpu': not a torch device"),
        ((tmp_path / "s", "--image-size", "0", "0"), "--image-size must be positive"),
    ]
    for (out, *extra), message in cases:
        assert extract(dataset, out, *extra) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert counting.calls == [] and existing.read_text() == "keep me"


def test_cuda_on_a_machine_without_it_is_a_one_line_error(dataset, tmp_path, counting, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert extract(dataset, tmp_path / "s", "--device", "cuda") == 1
    assert "--device 'cuda': no such device on this machine" in capsys.readouterr().err and counting.calls == []


def test_store_files_are_byte_identical_and_follow_the_umask(dataset, tmp_path, counting):
    old = os.umask(0o002)
    try:
        for run in ("one", "two"):
            assert extract(dataset, tmp_path / run) == 0
    finally:
        os.umask(old)
    one = sorted(p for p in (tmp_path / "one").rglob("*") if p.is_file())
    two = sorted(p for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert [p.relative_to(tmp_path / "one") for p in one] == [p.relative_to(tmp_path / "two") for p in two]
    for a, b in zip(one, two):
        assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest(), a.name
        assert a.stat().st_mode & 0o777 == 0o664, a.name


def test_stale_temporaries_of_killed_runs_are_removed(dataset, tmp_path, counting):
    store = tmp_path / "store"
    assert extract(dataset, store) == 0
    folder = next(p for p in store.iterdir() if (p / "config.json").is_file())
    stale, fresh = folder / ".scene0.abc.safetensors.tmp", folder / ".scene0.def.safetensors.tmp"
    for path in (stale, fresh):
        path.write_bytes(b"half")
    an_hour_ago = time.time() - 3700
    os.utime(stale, (an_hour_ago, an_hour_ago))
    assert extract(dataset, store) == 0
    assert not stale.exists() and fresh.exists()  # a young one may belong to a rank still writing it


def test_offline_clips_find_their_scene_and_same_named_scenes_are_an_error(dataset, tmp_path, counting):
    from vega3d.models.clips import load_clip
    from vega3d.models.generative import GenerativeSource
    from vega3d.models.settings import GenerativeSettings

    store = tmp_path / "store"
    assert extract(dataset, store) == 0
    source = GenerativeSource(GenerativeSettings(backbone="test-failure-counting", feature_dim=3), "offline", store)
    by_path = load_clip(dataset / "b" / "scene0", 3, (32, 32), scene_id="b/scene0")
    assert source.tokens(by_path).shape == (3, 2, 2, 3)
    by_name = load_clip(dataset / "a" / "scene0", 3, (32, 32))  # known by its name only: ambiguous here
    with pytest.raises(ValueError, match=r"scenes \['a/scene0', 'b/scene0'\] all match 'scene0'"):
        source.tokens(by_name)
