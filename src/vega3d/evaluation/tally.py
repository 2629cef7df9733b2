"""Averaging per-sample scores into the percentages the papers report."""

from __future__ import annotations

#: ``field``: the benchmarks' own evaluators (the default). ``released``: the conventions of the VEGA-3D
#: release's scripts where they differ (ScanRefer IoU denominator + 1e-8, Scan2Cap ROUGE-L on the released
#: tokenisation, ScanQA EM as a fraction).
CONVENTIONS = ("field", "released")


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}; got {convention!r}")
    return convention


def percent(values) -> float | None:
    """Mean x100; ``None`` (printed "-") for an empty group instead of a made-up number."""
    values = list(values)
    return 100.0 * sum(values) / len(values) if values else None


def grouped_percent(scores: dict, groups: dict, names, metric: str) -> dict:
    """``{"<group>/<metric>": percent}`` for each group name, plus ``"<group>/num_samples"``."""
    result = {}
    for name in names:
        members = [scores[sample_id] for sample_id, group in groups.items() if group == name]
        result[f"{name}/{metric}"] = percent(members)
        result[f"{name}/num_samples"] = len(members)
    return result
