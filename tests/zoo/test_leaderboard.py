"""The leaderboard end to end on the real scans: weight-free baselines, tiny models, sweeps, NOS."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from vega3d.analysis import leaderboard as lb
from vega3d.analysis import encode_frames, normalized_overall_score, run_awareness
from vega3d.backbones import load_backbone
from vega3d.cli import main
from vega3d.scenes import find_scenes

FAST = ["--frames", "4", "--image-size", "64", "--plots", "0"]


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_baselines_leaderboard_on_real_scans(shared_data, tmp_path, capsys):
    scenes = shared_data / "scenes"
    out = tmp_path / "board"
    assert main(["awareness", str(scenes), "--backbone", "pixels,position,vggt", "--out", str(out), *FAST]) == 0
    rows = _rows(out / "leaderboard.csv")
    assert [(r["backbone"], r["setting"]) for r in rows] == [("pixels", "default"), ("position", "default"), ("vggt", "default")]
    # Each row is the awareness statistic of that backbone alone over the same scenes.
    for row in rows[:2]:
        alone = run_awareness(find_scenes(scenes), load_backbone(row["backbone"]), num_frames=4, image_size=(64, 64),
                              progress=False).statistics()
        assert float(row["correspondence_mean"]) == pytest.approx(alone["mean"])
        assert float(row["correspondence_std"]) == pytest.approx(alone["std"])
        assert row["num_scored"] == "2" and float(row["seconds_per_scene"]) > 0
        assert (out / row["backbone"] / "summary.json").is_file()
    assert rows[2]["weights"] == "NOT AVAILABLE" and rows[2]["correspondence_mean"] == "nan"
    markdown = (out / "leaderboard.md").read_text()
    assert "| pixels | weight-free | default |" in markdown and "vggt: backbone 'vggt' is not available without its weights" in markdown
    assert (out / "leaderboard.png").stat().st_size > 0
    assert "leaderboard:" in capsys.readouterr().out


def test_tiny_models_sweeps_and_nos_on_real_scans(shared_data, tiny_weights, tmp_path, monkeypatch):
    loads = []
    real_load = lb.load_backbone
    monkeypatch.setattr(lb, "load_backbone", lambda name, **kw: loads.append(name) or real_load(name, **kw))
    nos_csv = tmp_path / "nos.csv"
    nos_csv.write_text("model,group,m1,m2\nBaseline,,1,1\npixels,g,3,2\nposition,g,2,5\nVAE,g,4,4\n")
    out = tmp_path / "board"
    weights = ",".join(f"{n}={tiny_weights(n)}" for n in ("sd-vae", "sd2.1"))
    argv = ["awareness", str(shared_data / "scenes"), "--backbone", "pixels,position,sd-vae,sd2.1", "--weights", weights,
            "--option", "sd-vae:resolution=32", "--option", "sd2.1:resolution=32", "--timesteps", "0,500", "--layers", "0",
            "--nos", str(nos_csv), "--out", str(out), *FAST]
    assert main(argv) == 0
    assert loads == ["pixels", "position", "sd-vae", "sd2.1"]  # the sweep reuses the loaded model
    rows = _rows(out / "leaderboard.csv")
    assert [(r["backbone"], r["setting"]) for r in rows] == [
        ("pixels", "default"), ("position", "default"), ("sd-vae", "default"),
        ("sd2.1", "timestep=0"), ("sd2.1", "timestep=500"), ("sd2.1", "block=0")]
    by_setting = {(r["backbone"], r["setting"]): r for r in rows}
    assert all(r["weights"] == "RANDOM WEIGHTS (untrained, for tests)" for r in rows[2:])
    assert by_setting[("sd2.1", "timestep=0")]["correspondence_mean"] != by_setting[("sd2.1", "timestep=500")]["correspondence_mean"]
    assert int(by_setting[("sd2.1", "block=0")]["num_parameters"]) > 0
    # A swept row equals a freshly loaded backbone with that setting.
    fresh = run_awareness(find_scenes(shared_data / "scenes"), real_load("sd2.1", weights=tiny_weights("sd2.1"), resolution=32,
                                                                           timestep=500), num_frames=4, image_size=(64, 64),
                          progress=False).statistics()
    assert float(by_setting[("sd2.1", "timestep=500")]["correspondence_mean"]) == pytest.approx(fresh["mean"], abs=1e-6)
    sweep = json.loads((out / "sd2.1_timestep500" / "summary.json").read_text())
    assert sweep["backbone"]["timestep"] == 500 and sweep["backbone"]["block"] == -1  # the default, restored
    # NOS: the default rows found in the table (sd-vae through its paper name "VAE") against their NOS.
    result = json.loads((out / "leaderboard.json").read_text())["nos"]
    nos = normalized_overall_score({"Baseline": [1, 1], "pixels": [3, 2], "position": [2, 5], "VAE": [4, 4]}, "Baseline")
    assert {b: (m, n) for b, (m, _, n) in result["points"].items()} == {
        "pixels": ("pixels", pytest.approx(nos["pixels"])), "position": ("position", pytest.approx(nos["position"])),
        "sd-vae": ("VAE", pytest.approx(nos["VAE"]))}
    x = [100 * float(by_setting[(b, "default")]["correspondence_mean"]) for b in ("pixels", "position", "sd-vae")]
    y = [nos[m] for m in ("pixels", "position", "VAE")]
    assert result["correlation"]["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert (out / "correspondence_vs_nos.png").stat().st_size > 0
    assert "Pearson r =" in (out / "leaderboard.md").read_text()


def test_the_tiny_model_boards_cover_every_tiny_model():
    from vega3d.backbones.tiny import TINY_OPTIONS

    assert sorted(sum(_tiny_model_groups(), [])) == sorted(TINY_OPTIONS)


def test_finished_settings_are_reused(synthetic_scene, tmp_path, monkeypatch):
    requests = [lb.BackboneRequest("pixels"), lb.BackboneRequest("position", options={"grid": [7, 7]})]
    first = lb.run_leaderboard([synthetic_scene], requests, tmp_path, num_frames=4, image_size=(48, 48), plot_scenes=0,
                               progress=False)

    def fail(*args, **kwargs):
        raise AssertionError("a finished setting was computed again")

    monkeypatch.setattr(lb, "run_awareness", fail)
    # An encode function (e.g. a feature store in front of the backbone) changes no setting.
    again = lb.run_leaderboard([synthetic_scene], requests, tmp_path, num_frames=4, image_size=(48, 48), plot_scenes=0,
                               progress=False, encode=encode_frames)
    assert [r["correspondence_mean"] for r in again.rows] == [r["correspondence_mean"] for r in first.rows]
    with pytest.raises(AssertionError, match="computed again"):  # other options: a new computation
        lb.run_leaderboard([synthetic_scene], requests, tmp_path, num_frames=5, image_size=(48, 48), plot_scenes=0,
                           progress=False)


def test_parse_requests():
    requests = lb.parse_requests("a,b", "a=/w/a,b=hub/b", ["grid=[7,7]", "b:timestep=300", "b:prompt=x:y"])
    assert [(r.name, r.weights, r.options) for r in requests] == [
        ("a", "/w/a", {"grid": [7, 7]}), ("b", "hub/b", {"grid": [7, 7], "timestep": 300, "prompt": "x:y"})]
    assert lb.parse_requests("a", "/w/with=sign,comma")[0].weights == "/w/with=sign,comma"
    with pytest.raises(ValueError, match="NAME=PATH entries"):
        lb.parse_requests("a,b", "/w/a")
    with pytest.raises(ValueError, match="expected \\[BACKBONE:\\]KEY=VALUE"):
        lb.parse_requests("a,b", None, ["c:timestep=3"])
    with pytest.raises(ValueError, match="--timesteps expects comma-separated integers"):
        lb.parse_int_list("0,ten", "--timesteps")


def test_cli_errors_are_clear(synthetic_scene, tmp_path, capsys, tiny_weights):
    out = tmp_path / "never"
    assert main(["awareness", str(synthetic_scene), "--backbone", "pixels,nope", "--out", str(out), *FAST]) == 1
    assert "unknown backbone 'nope'" in capsys.readouterr().err
    assert main(["awareness", str(synthetic_scene), "--backbone", "pixels", "--timesteps", "1,x", "--out", str(out)]) == 1
    assert "--timesteps expects comma-separated integers" in capsys.readouterr().err
    assert main(["awareness", str(synthetic_scene), "--backbone", "sd2.1", "--weights", tiny_weights("sd2.1"),
                 "--option", "resolution=32", "--timesteps", "1000", "--out", str(out), *FAST]) == 1
    assert "timestep must be an integer in [0, 999]" in capsys.readouterr().err
    assert main(["awareness", str(synthetic_scene), "--nos", str(tmp_path / "missing.csv"), "--out", str(out)]) == 1
    assert "missing.csv: no such file" in capsys.readouterr().err
    assert main(["awareness", str(synthetic_scene), "--backbone", "pixels", "--option", "resolution=32", "--out", str(out), *FAST]) == 1
    assert "backbone 'pixels': PixelsBackbone.__init__() got an unexpected keyword argument 'resolution'" in capsys.readouterr().err
    assert not (out / "leaderboard.csv").exists()


def _tiny_model_groups() -> list[list[str]]:
    """Every tiny model once, in three boards of a few (one board with all of them is too long a test)."""
    from vega3d.backbones.tiny import TINY_OPTIONS, TINY_VIDEO_DITS

    dits = [name for name in TINY_OPTIONS if name in TINY_VIDEO_DITS]
    others = [name for name in TINY_OPTIONS if name not in TINY_VIDEO_DITS]
    return [others[: len(others) // 2], others[len(others) // 2:], dits]


@pytest.mark.parametrize("names", _tiny_model_groups(), ids=["first_half", "second_half", "video_dits"])
def test_every_tiny_model_on_a_real_scan(tabletop_scene, tiny_weights, tmp_path, names):
    from vega3d.backbones.tiny import TINY_OPTIONS

    requests = [lb.BackboneRequest(name, tiny_weights(name), dict(TINY_OPTIONS[name])) for name in names]
    board = lb.run_leaderboard([tabletop_scene], requests, tmp_path, num_frames=3, image_size=(64, 64), plot_scenes=0,
                               progress=False)
    assert [r["backbone"] for r in board.rows] == names
    for row in board.rows:
        assert row["weights"] == "RANDOM WEIGHTS (untrained, for tests)" and row["num_scored"] == 1
        assert -1.0 <= row["correspondence_mean"] <= 1.0 and row["num_parameters"] > 0
        summary = json.loads((tmp_path / row["backbone"] / "summary.json").read_text())
        assert summary["backbone"]["name"] == row["backbone"] and summary["backbone"]["num_parameters"] == row["num_parameters"]


def test_each_scene_is_read_once_per_run_whatever_the_backbones(synthetic_scene, tmp_path, monkeypatch):
    import vega3d.scenes.prepared as prepared_module

    reads = []
    real = prepared_module.load_scene
    monkeypatch.setattr(prepared_module, "load_scene", lambda path, **kw: reads.append(str(path)) or real(path, **kw))
    requests = [lb.BackboneRequest("pixels"), lb.BackboneRequest("position"), lb.BackboneRequest("pixels", options={"grid": [5, 5]})]
    board = lb.run_leaderboard([synthetic_scene], requests, tmp_path, num_frames=4, image_size=(48, 48), plot_scenes=0,
                               progress=False, timesteps=())
    assert len(board.rows) == 3 and reads == [str(synthetic_scene)]  # 3 backbones, 1 read
