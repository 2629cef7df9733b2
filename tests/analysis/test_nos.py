import math

import pytest

from vega3d.analysis import correlation, normalized_overall_score, read_nos_table
from vega3d.commands.nos import paper_table

# Tab-A2 of the paper: NOS per model (the baseline gets one value per group).
TAB_A2 = {
    "discriminative": {"Baseline": 13.58, "V-JEPA v2": 77.54, "DINOv3-Large": 61.63, "VGGT": 88.24},
    "generative": {"Baseline": 12.22, "Stable Video Diffusion": 52.06, "Stable Diffusion 2.1": 70.57, "Vmem": 63.75,
                   "SEVA": 75.28, "VAE": 77.29, "Wan2.1-VACE": 89.32, "Wan2.1-T2V": 82.41},
}


def test_reproduces_tab_a2_from_tab_4():
    table = read_nos_table(paper_table())
    by_group = table.nos_by_group("Baseline")
    for group, expected in TAB_A2.items():
        for name, value in expected.items():
            assert by_group[group][name] == pytest.approx(value, abs=0.005), (group, name)


def test_hand_computed_nos():
    table = {"base": [0.0, 10.0], "a": [1.0, 30.0], "b": [0.5, 20.0]}
    nos = normalized_overall_score(table, "base")
    assert nos == pytest.approx({"base": 0.0, "a": 100.0, "b": 50.0})


def test_tied_metric_is_left_out():
    nos = normalized_overall_score({"base": [1.0, 0.0], "a": [1.0, 2.0]}, "base")
    assert nos == pytest.approx({"base": 0.0, "a": 100.0})


def test_errors():
    with pytest.raises(KeyError, match="baseline 'x'"):
        normalized_overall_score({"a": [1.0]}, "x")
    with pytest.raises(ValueError, match="same number of metrics"):
        normalized_overall_score({"a": [1.0], "b": [1.0, 2.0]}, "a")
    with pytest.raises(ValueError, match="'b' is not a finite"):
        normalized_overall_score({"a": [1.0], "b": [math.nan]}, "a")


def test_correlation_against_scipy_free_formula():
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 4.5]
    mx, my = sum(x) / 4, sum(y) / 4
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    r = cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    c = correlation(x, y)
    assert c.pearson == pytest.approx(r)
    # ranks of y: 1, 2, 4, 3 -> Spearman = 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert c.spearman == pytest.approx(0.8)


def test_read_table_errors(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("model,a\nx,1\nx,2\n")
    with pytest.raises(ValueError, match=r"t.csv:3: model 'x' appears twice"):
        read_nos_table(bad)
    bad.write_text("model,a\nx,oops\n")
    with pytest.raises(ValueError, match=r"t.csv:2: model 'x' has a non-numeric"):
        read_nos_table(bad)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_nos_table(tmp_path / "missing.csv")
