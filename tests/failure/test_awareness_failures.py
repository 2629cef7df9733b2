"""`vega3d awareness`: untrustworthy scores are flagged, NaN is JSON null, bad scenes are listed and retried."""

from __future__ import annotations

import csv
import json

import numpy as np
from PIL import Image

from vega3d.cli import main

SAMPLED = (0, 7, 15, 23)  # floor(linspace(0, 23, 4)): the frames --frames 4 reads


def awareness(scenes, out, *extra):
    return main(["awareness", str(scenes), "--backbone", "test-failure-counting", "--out", str(out), "--frames", "4",
                 "--image-size", "32", "--plots", "0", *extra])


def strict_json(path):
    return json.loads(path.read_text(), parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))


def test_few_voxels_and_low_valid_depth_are_flagged(dataset, tmp_path, counting):
    scene = dataset / "b" / "scene0"
    for i in SAMPLED:  # keep valid depth in one small corner only
        depth = np.asarray(Image.open(scene / f"{i:05d}.png")).copy()
        depth[8:, :] = 0
        depth[:, 8:] = 0
        Image.fromarray(depth).save(scene / f"{i:05d}.png")
    out = tmp_path / "out"
    assert awareness(dataset, out, "--voxel-size", "50") == 0  # 50 m voxels: the whole room is one voxel
    summary = strict_json(out / "summary.json")
    assert summary["statistics"]["flagged_scenes"] == {"a/scene0": ["few_voxels"], "b/scene0": ["few_voxels", "low_valid_depth"]}
    rows = list(csv.DictReader((out / "scenes.csv").open()))
    assert [r["flags"] for r in rows] == ["few_voxels", "few_voxels;low_valid_depth"]
    assert float(rows[1]["valid_depth"]) < 0.05 and "flagged" in (out / "report.md").read_text()


def test_nan_is_written_as_null(dataset, tmp_path, counting):
    out = tmp_path / "one"
    assert awareness(dataset / "a" / "scene0", out, "--frames", "1") == 0
    summary = strict_json(out / "summary.json")  # bare NaN would not parse
    assert summary["scenes"][0]["score"] is None and summary["statistics"]["mean"] is None


def test_a_bad_scene_is_listed_the_others_scored_and_a_rerun_retries_only_it(dataset, tmp_path, counting, capsys):
    scene = dataset / "b" / "scene0"
    depth = {i: (scene / f"{i:05d}.png").read_bytes() for i in SAMPLED}
    for i in SAMPLED:  # all-zero depth: no 3-D point, no score
        Image.fromarray(np.zeros((120, 160), np.uint16)).save(scene / f"{i:05d}.png")
    out = tmp_path / "out"
    assert awareness(dataset, out) == 3
    assert "b/scene0: no valid depth in the 4 sampled frames" in capsys.readouterr().err
    summary = strict_json(out / "summary.json")
    assert [s["scene_id"] for s in summary["scenes"]] == ["a/scene0"]
    assert [f["scene"] for f in summary["statistics"]["failed_scenes"]] == [str(scene)]
    for i, data in depth.items():
        (scene / f"{i:05d}.png").write_bytes(data)
    counting.calls.clear()
    assert awareness(dataset, out) == 0
    assert counting.calls == ["b/scene0"]  # a/scene0 was kept from the first run
    summary = strict_json(out / "summary.json")
    assert [s["scene_id"] for s in summary["scenes"]] == ["a/scene0", "b/scene0"] and summary["statistics"]["failed_scenes"] == []
