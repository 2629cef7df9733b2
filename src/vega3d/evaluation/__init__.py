"""Scoring for the benchmarks of the paper's Tab. 1 and Tab. 2, independent of any model.

``score(benchmark, predictions, annotations)`` returns a dict of metrics in the papers' units (x100).
``predictions``: a JSONL path, or the same records as a list of dicts. ``annotations``: a path to the
file as the benchmark publishes it (SQA3D: a list of its two files) or the loaded object. File
formats and conventions: docs/evaluation.md.
"""

from __future__ import annotations

import importlib
import inspect

# The scorers (numpy, scipy, torch) are imported on first use, so that `vega3d --help` (whose `predict`
# verb lists the tasks of this package) starts without them: name -> (module, attribute).
_LAZY = {
    "box_iou_3d": ("boxes", "box_iou_3d"),
    "EvaluationInputError": ("inputs", "EvaluationInputError"),
    "clean_sqa3d_answer": ("sqa3d", "clean_sqa3d_answer"),
    "mean_relative_accuracy": ("vsibench", "mean_relative_accuracy"),
}
_SCORER_FUNCTIONS = {
    "scanrefer": ("grounding", "score_scanrefer"),
    "multi3drefer": ("grounding", "score_multi3drefer"),
    "scan2cap": ("captions", "score_scan2cap"),
    "scanqa": ("captions", "score_scanqa"),
    "sqa3d": ("sqa3d", "score_sqa3d"),
    "vsibench": ("vsibench", "score_vsibench"),
}


def _load(module: str, attribute: str):
    return getattr(importlib.import_module(f"vega3d.evaluation.{module}"), attribute)


def __getattr__(name: str):
    if name == "SCORERS":  # {benchmark: scoring function}
        return {benchmark: _load(*where) for benchmark, where in _SCORER_FUNCTIONS.items()}
    if name in _LAZY:
        return _load(*_LAZY[name])
    raise AttributeError(f"module 'vega3d.evaluation' has no attribute {name!r}")


TITLES = {"scanrefer": "ScanRefer", "multi3drefer": "Multi3DRefer", "scan2cap": "Scan2Cap", "scanqa": "ScanQA",
          "sqa3d": "SQA3D", "vsibench": "VSI-Bench"}

# (column name in the paper's table, metric key): the row `vega3d eval` prints.
TABLE_COLUMNS = {
    "scanrefer": [("Acc.25", "Acc@0.25"), ("Acc.5", "Acc@0.5")],
    "multi3drefer": [("F1.25", "F1@0.25"), ("F1.5", "F1@0.5")],
    "scan2cap": [("C.5", "CIDEr@0.5"), ("B-4.5", "BLEU-4@0.5")],
    "scanqa": [("C", "CIDEr"), ("EM", "EM")],
    "sqa3d": [("EM", "EM")],
    "vsibench": [
        ("Avg.", "overall"), ("Obj. Count", "object_counting"), ("Abs. Dist.", "object_abs_distance"),
        ("Obj. Size", "object_size_estimation"), ("Room Size", "room_size_estimation"),
        ("Rel. Dist.", "object_rel_distance"), ("Rel. Dir.", "object_rel_direction"),
        ("Route Plan", "route_planning"), ("Appr. Order", "obj_appearance_order"),
    ],
}


def score(benchmark: str, predictions, annotations, **options) -> dict:
    """Metrics of ``predictions`` on ``benchmark`` (one of ``SCORERS``); ``options`` go to its scorer
    (``with_meteor=False`` skips the Java METEOR for scan2cap/scanqa)."""
    name = benchmark.lower().replace("-", "")  # "VSI-Bench" and "ScanRefer" work too
    if name not in _SCORER_FUNCTIONS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {', '.join(_SCORER_FUNCTIONS)}")
    scorer = _load(*_SCORER_FUNCTIONS[name])
    unknown = set(options) - set(inspect.signature(scorer).parameters)
    if unknown:
        raise ValueError(f"{name} takes no option(s) {', '.join(sorted(unknown))}")
    return scorer(predictions, annotations, **options)


def table_row(benchmark: str, metrics: dict) -> str:
    """The paper's header and row for ``benchmark``, tab-separated, one decimal, "-" for missing."""
    columns = TABLE_COLUMNS[benchmark]
    values = ["-" if metrics.get(key) is None else f"{metrics[key]:.1f}" for _, key in columns]
    return "\t".join(["Benchmark", *(name for name, _ in columns)]) + "\n" + "\t".join([TITLES[benchmark], *values])


__all__ = [
    "EvaluationInputError",
    "SCORERS",
    "TABLE_COLUMNS",
    "box_iou_3d",
    "clean_sqa3d_answer",
    "mean_relative_accuracy",
    "score",
    "table_row",
]
