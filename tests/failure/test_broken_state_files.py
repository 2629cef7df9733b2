"""Half-written state files of resumable runs are named (trainer_state.json) or recomputed (leaderboard rows)."""

from __future__ import annotations

import json

import pytest

import vega3d.analysis.leaderboard as lb
from vega3d.io import read_json


def test_broken_leaderboard_row_is_recomputed_with_a_warning(synthetic_scene, tmp_path):
    requests = [lb.BackboneRequest("pixels")]
    options = dict(num_frames=2, image_size=(32, 32), plot_scenes=0, progress=False)
    first = lb.run_leaderboard([synthetic_scene], requests, tmp_path, **options)
    row = next(tmp_path.rglob("leaderboard_row.json"))
    row.write_text(row.read_text()[: len(row.read_text()) // 2])
    with pytest.warns(UserWarning, match=r"leaderboard_row.json: broken .*computing this row again"):
        again = lb.run_leaderboard([synthetic_scene], requests, tmp_path, **options)
    assert again.rows[0]["correspondence_mean"] == first.rows[0]["correspondence_mean"]
    json.loads(row.read_text())  # rewritten whole


def test_broken_json_state_is_a_one_line_error_naming_the_file(tmp_path):
    state = tmp_path / "checkpoint-4" / "trainer_state.json"
    state.parent.mkdir()
    state.write_text('{"global_step": 4, "log_hist')
    with pytest.raises(ValueError, match=r"checkpoint-4/trainer_state.json: broken trainer state"):
        read_json(state, "trainer state")
