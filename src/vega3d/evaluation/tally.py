"""Averaging per-sample scores into the percentages the papers report."""

from __future__ import annotations


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
