"""Action and proprio normalisation (BOUNDS_Q99) and LIBERO's gripper convention (REFERENCE-VLA F2.13-F2.17).

Statistics live in ``dataset_statistics.json``: ``{dataset: {"action": {mean, std, max, min, q01, q99, mask},
"proprio": {...}, num_transitions, num_trajectories}}``. Forward: ``clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1,
-1, 1)`` on the masked dimensions (the gripper is not normalised; it is already in [0, 1]), dimensions with
``min == max`` become 0. Inverse: ``0.5 (x + 1) (q99 - q01 + 1e-8) + q01`` on the masked dimensions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vega3d.io import write_json

STATISTICS_FILE = "dataset_statistics.json"
FIELDS = ("mean", "std", "max", "min", "q01", "q99")
EPS = 1e-8


def libero_gripper_for_training(gripper: np.ndarray) -> np.ndarray:
    """LIBERO's raw gripper (-1 open ... +1 close) -> the training target (1 = open, 0 = close), F2.15."""
    return 1.0 - np.clip(gripper, 0.0, 1.0)


def gripper_for_env(gripper: np.ndarray) -> np.ndarray:
    """The policy's gripper (1 = open, 0 = close) -> the environment's command (-1 open, +1 close), F2.16."""
    return -np.sign(2.0 * np.asarray(gripper) - 1.0)


def summarise(values: np.ndarray, mask: list[bool] | None = None) -> dict:
    values = np.asarray(values, dtype=np.float64)
    stats = {"mean": values.mean(0), "std": values.std(0), "max": values.max(0), "min": values.min(0),
             "q01": np.quantile(values, 0.01, axis=0), "q99": np.quantile(values, 0.99, axis=0)}
    stats = {key: [float(v) for v in value] for key, value in stats.items()}
    if mask is not None:
        stats["mask"] = [bool(m) for m in mask]
    return stats


def compute_statistics(actions: np.ndarray, proprio: np.ndarray, num_trajectories: int) -> dict:
    """Statistics of training-form actions ``[N, A]`` (the last dimension is the gripper) and proprio ``[N, P]``."""
    action_dim = actions.shape[-1]
    return {"action": summarise(actions, [True] * (action_dim - 1) + [False]), "proprio": summarise(proprio),
            "num_transitions": int(len(actions)), "num_trajectories": int(num_trajectories)}


class Normalizer:
    """Normalises and un-normalises with one dataset's statistics."""

    def __init__(self, statistics: dict, source: str = "normalisation statistics"):
        for part in ("action", "proprio"):
            if part not in statistics:
                raise ValueError(f"{source}: no {part!r} statistics")
            missing = [f for f in ("q01", "q99", "min", "max") if f not in statistics[part]]
            if missing:
                raise ValueError(f"{source}: {part!r} statistics lack {missing}")
        self.statistics = statistics
        self.action_mask = np.asarray(statistics["action"].get("mask", [True] * len(statistics["action"]["q01"])))

    def _stats(self, part: str):
        s = self.statistics[part]
        return (np.asarray(s[k], dtype=np.float64) for k in ("q01", "q99", "min", "max"))

    def _normalize(self, values, part: str, mask) -> np.ndarray:
        q01, q99, low, high = self._stats(part)
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-1] != len(q01):
            raise ValueError(f"{part} has {values.shape[-1]} dimensions; the statistics have {len(q01)}")
        scaled = np.clip(2 * (values - q01) / (q99 - q01 + EPS) - 1, -1, 1)
        out = np.where(mask, scaled, values)
        return np.where(low == high, 0.0, out).astype(np.float32)

    def normalize_actions(self, actions) -> np.ndarray:
        return self._normalize(actions, "action", self.action_mask)

    def normalize_proprio(self, proprio) -> np.ndarray:
        return self._normalize(proprio, "proprio", True)

    def unnormalize_actions(self, actions) -> np.ndarray:
        q01, q99, _, _ = self._stats("action")
        actions = np.asarray(actions, dtype=np.float64)
        return np.where(self.action_mask, 0.5 * (actions + 1) * (q99 - q01 + EPS) + q01, actions)


def save_statistics(folder: str | Path, key: str, statistics: dict) -> Path:
    return write_json(Path(folder) / STATISTICS_FILE, {key: statistics})


def load_statistics(folder: str | Path, key: str | None = None) -> tuple[str, Normalizer]:
    """The statistics of ``key`` (or the only dataset in the file), as LIBERO eval picks them (F2.17):
    ``key`` itself, else ``key + "_no_noops"``."""
    path = Path(folder) / STATISTICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing normalisation statistics (the policy cannot un-normalise its actions)")
    values = json.loads(path.read_text())
    if key is None:
        if len(values) != 1:
            raise ValueError(f"{path}: holds statistics of {sorted(values)}; choose one (unnorm key)")
        key = next(iter(values))
    for candidate in (key, f"{key}_no_noops"):
        if candidate in values:
            return candidate, Normalizer(values[candidate], f"{path} [{candidate!r}]")
    raise ValueError(f"{path}: no statistics for {key!r} (or {key + '_no_noops'!r}); it has {sorted(values)}")
