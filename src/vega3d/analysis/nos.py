"""Normalized Overall Score (paper App. C.2) and its correlation with the correspondence score.

NOS(t) = 100 / M * sum_m (x_tm - min_G x_m) / (max_G x_m - min_G x_m), with the min and max taken over
the group G (the models being compared together with the baseline). The paper normalises the
discriminative and generative groups separately, so the baseline gets one NOS per group.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def normalized_overall_score(table: Mapping[str, Sequence[float]], baseline: str) -> dict[str, float]:
    """NOS in percent for every model of ``table`` (name -> metric values, baseline included).

    A metric on which every model ties carries no information and is left out of the mean (it would
    otherwise divide by zero); a warning-free choice because it shifts every model equally.
    """
    if baseline not in table:
        raise KeyError(f"baseline {baseline!r} is not in the table (models: {', '.join(table)})")
    names = list(table)
    lengths = {name: len(values) for name, values in table.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"every model needs the same number of metrics; got {lengths}")
    values = np.array([list(table[name]) for name in names], dtype=np.float64)
    if values.shape[1] == 0:
        raise ValueError("the table has no metric values")
    if not np.isfinite(values).all():
        row, col = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(f"metric {col} of model {names[row]!r} is not a finite number")
    low, high = values.min(0), values.max(0)
    spread = high - low
    informative = spread > 0
    if not informative.any():
        raise ValueError("every metric ties across all models: NOS is undefined")
    normalised = (values[:, informative] - low[informative]) / spread[informative]
    return {name: float(100.0 * normalised[i].mean()) for i, name in enumerate(names)}


@dataclass
class Correlation:
    pearson: float
    pearson_p: float
    spearman: float
    spearman_p: float
    n: int

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def correlation(x: Sequence[float], y: Sequence[float]) -> Correlation:
    """Pearson and Spearman correlation (with p-values) over the pairs where both values are finite."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {x.shape} vs {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        raise ValueError(f"need at least 3 models with both values to correlate; got {int(keep.sum())}")
    from scipy import stats  # here: importing scipy.stats costs a second to every `vega3d awareness` run without NOS

    p = stats.pearsonr(x[keep], y[keep])
    s = stats.spearmanr(x[keep], y[keep])
    return Correlation(float(p.statistic), float(p.pvalue), float(s.statistic), float(s.pvalue), int(keep.sum()))


@dataclass
class NosTable:
    """A table of downstream metrics read from CSV: ``model,group,<metric>...[,correspondence]``.

    ``group`` is optional; the baseline row belongs to every group. ``correspondence`` (percent or
    fraction, blank when unknown) enables the correlation analysis.
    """

    metrics: list[str]
    rows: dict[str, list[float]]
    groups: dict[str, str]
    correspondence: dict[str, float]

    def group_names(self, baseline: str) -> list[str]:
        return sorted({g for name, g in self.groups.items() if name != baseline}) or [""]

    def nos_by_group(self, baseline: str) -> dict[str, dict[str, float]]:
        out = {}
        for group in self.group_names(baseline):
            members = {n: v for n, v in self.rows.items() if n == baseline or self.groups.get(n, "") == group}
            out[group] = normalized_overall_score(members, baseline)
        return out


def read_nos_table(path: str | Path) -> NosTable:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        if "model" not in header:
            raise ValueError(f"{path}: the header must have a 'model' column; got {header}")
        metrics = [h for h in header if h not in ("model", "group", "correspondence")]
        if not metrics:
            raise ValueError(f"{path}: no metric columns besides model/group/correspondence")
        rows, groups, corr = {}, {}, {}
        for line, record in enumerate(reader, start=2):
            name = (record.get("model") or "").strip()
            if not name:
                raise ValueError(f"{path}:{line}: empty model name")
            if name in rows:
                raise ValueError(f"{path}:{line}: model {name!r} appears twice")
            try:
                rows[name] = [float(record[m]) for m in metrics]
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: model {name!r} has a non-numeric metric value") from None
            groups[name] = (record.get("group") or "").strip()
            value = (record.get("correspondence") or "").strip()
            corr[name] = float(value) if value else math.nan
    return NosTable(metrics, rows, groups, corr)
