import csv
import json
import shutil

import pytest

from vega3d.cli import main


def test_demo_default_scene_writes_report_and_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["awareness", "--out", str(out), "--frames", "12", "--image-size", "96", "--plots", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    scene = summary["scenes"][0]
    assert scene["scene_id"] == "synthetic_room" and len(scene["frame_indices"]) == 12
    assert summary["options"]["sampling"].startswith("floor(linspace")
    assert summary["statistics"]["num_scored"] == 1 and 0 < summary["statistics"]["mean"] <= 1
    for name in ("scenes.csv", "report.md", "synthetic_room_pca.png", "synthetic_room_consistency.png"):
        assert (out / name).stat().st_size > 0, name
    assert "correspondence" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp"))


def test_folder_of_real_scenes_csv_and_statistics(shared_data, tmp_path):
    out = tmp_path / "real"
    assert main(["awareness", str(shared_data / "scenes"), "--backbone", "position", "--out", str(out),
                 "--frames", "8", "--plots", "0", "--min-valid-depth", "0.1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    scores = [s["score"] for s in summary["scenes"]]
    assert [s["scene_id"] for s in summary["scenes"]] == ["posed_images/hololens_office_000", "scannet_export/tabletop_000"]
    mean = sum(scores) / 2
    assert summary["statistics"]["mean"] == pytest.approx(mean)
    assert summary["statistics"]["std"] == pytest.approx(abs(scores[0] - scores[1]) / 2)
    lines = (out / "scenes.csv").read_text().splitlines()
    assert lines[0].startswith("scene_id,score,num_pairs") and len(lines) == 3


def test_nan_scene_is_listed_not_averaged(tabletop_scene, tmp_path):
    # One frame only -> no voxel can be seen twice.
    out = tmp_path / "one"
    assert main(["awareness", str(tabletop_scene), "--frames", "1", "--out", str(out), "--plots", "0"]) == 0
    stats = json.loads((out / "summary.json").read_text())["statistics"]
    assert stats["nan_scenes"] == ["tabletop_000"] and stats["num_scored"] == 0


def test_adjacent_protocol_reports_pair_scores(tabletop_scene, tmp_path):
    out = tmp_path / "adj"
    assert main(["awareness", str(tabletop_scene), "--frames", "4", "--protocol", "adjacent", "--out", str(out), "--plots", "0"]) == 0
    scene = json.loads((out / "summary.json").read_text())["scenes"][0]
    assert len(scene["pair_scores"]) == 3


def test_bad_inputs_fail_clearly_without_output(tmp_path, capsys, tabletop_scene):
    out = tmp_path / "never"
    assert main(["awareness", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert "missing: does not exist" in capsys.readouterr().err
    assert main(["awareness", str(tabletop_scene), "--frames", "60", "--out", str(out)]) == 1
    assert "asked for 60 frames but only 50 usable" in capsys.readouterr().err
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VEGA3D_CACHE", str(tmp_path / "fresh_cache"))
        assert main(["awareness", "--backbone", "pixels,nope", "--out", str(out)]) == 1
    assert "unknown backbone 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "fresh_cache").exists()  # the name is checked before the default scene is rendered
    broken = tmp_path / "broken"
    shutil.copytree(tabletop_scene, broken)
    (broken / "color" / "0.jpg").write_bytes(b"")
    assert main(["awareness", str(broken), "--out", str(out)]) == 1
    assert "0.jpg: cannot read image" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())


def test_list_backbones(capsys):
    assert main(["awareness", "--list"]) == 0
    assert "pixels" in capsys.readouterr().out


def test_nos_command_on_paper_table(tmp_path, capsys):
    assert main(["nos", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "Wan2.1-T2V" in printed and "82.41" in printed and "Pearson" in printed
    result = json.loads((tmp_path / "nos.json").read_text())
    assert result["nos"]["discriminative"]["VGGT"] == pytest.approx(88.24, abs=0.005)
    assert (tmp_path / "correspondence_vs_nos.png").stat().st_size > 0


def test_scene_cache_gives_the_same_scores_across_runs(synthetic_scene, tmp_path):
    def run(name: str, *backbones: str) -> str:
        out = tmp_path / name
        assert main(["awareness", str(synthetic_scene), "--backbone", ",".join(backbones), "--frames", "4", "--image-size", "32",
                     "--plots", "0", "--out", str(out), "--scene-cache", str(tmp_path / "cache")]) == 0
        return out

    first = run("first", "pixels")
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    second = run("second", "pixels")  # from the cache
    rows = [list(csv.DictReader((out / "scenes.csv").open())) for out in (first, second)]
    for row in rows:
        row[0].pop("seconds")  # the cached run is faster; everything else is equal
    assert rows[0] == rows[1] and float(rows[0][0]["score"]) > 0.9
    board = run("board", "pixels", "position")  # a leaderboard uses the same cache
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1 and (board / "leaderboard.csv").is_file()
