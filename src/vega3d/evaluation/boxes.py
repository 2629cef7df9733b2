"""Axis-aligned 3-D boxes (centre + size) and the ground-truth box table of the grounding benchmarks.

ScanRefer, Multi3DRefer and Scan2Cap publish descriptions, not boxes (those come from ScanNet meshes),
so their annotation input is one JSON object::

    {"annotations": [...records exactly as published...],
     "boxes": {"scene0011_00": {"12": {"box": [cx, cy, cz, dx, dy, dz], "label": "chair"}, ...}, ...}}

``box`` is the axis-aligned box of the object's points (centre, then full size along x, y, z, in the
scene's aligned frame, metres); ``label`` is the object's class (used by ScanRefer's unique/multiple).
"""

from __future__ import annotations

import math

import numbers

import numpy as np

from vega3d.evaluation.inputs import EvaluationInputError, read_annotations, source_name


def box_iou_3d(a, b, epsilon: float = 0.0):
    """IoU of axis-aligned boxes given as ``[cx, cy, cz, dx, dy, dz]``.

    ``a`` and ``b`` broadcast against each other (``[..., 6]``); two single boxes give a float.
    Boxes with zero volume have IoU 0 with everything (including themselves). ``epsilon`` is added to
    the union (the released ScanRefer script's ``+ 1e-8``: an IoU of exactly 0.25 or 0.5 then fails).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape[-1:] != (6,) or b.shape[-1:] != (6,):
        raise ValueError(f"boxes must have 6 values (centre + size); got shapes {a.shape} and {b.shape}")
    if (a[..., 3:] < 0).any() or (b[..., 3:] < 0).any():
        raise ValueError("box sizes must be non-negative")
    low = np.maximum(a[..., :3] - a[..., 3:] / 2, b[..., :3] - b[..., 3:] / 2)
    high = np.minimum(a[..., :3] + a[..., 3:] / 2, b[..., :3] + b[..., 3:] / 2)
    intersection = np.clip(high - low, 0, None).prod(axis=-1)
    union = a[..., 3:].prod(axis=-1) + b[..., 3:].prod(axis=-1) - intersection
    iou = np.divide(intersection, union + epsilon, out=np.zeros_like(union), where=union > 0)
    return float(iou) if iou.ndim == 0 else iou


def parse_box(value, where: str) -> np.ndarray:
    """One box from JSON, or an error naming ``where``; the values must be numbers (a string or a boolean
    would otherwise be converted silently and scored)."""
    box = None
    if isinstance(value, np.ndarray) and value.dtype.kind in "iuf":
        box = value.astype(np.float64)
    elif isinstance(value, (list, tuple)) and all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in value):
        box = np.asarray(value, dtype=np.float64)
    if box is None or box.shape != (6,) or not all(math.isfinite(v) for v in box) or (box[3:] < 0).any():
        raise EvaluationInputError(
            f"{where}: a box is [cx, cy, cz, dx, dy, dz]: six finite numbers, sizes >= 0; got {value!r:.80}"
        )
    return box


def parse_boxes(value, where: str) -> np.ndarray:
    """A list of boxes (possibly empty) as ``[N, 6]``."""
    if not isinstance(value, list):
        raise EvaluationInputError(f"{where}: 'boxes' must be a list of boxes; got {value!r:.80}")
    return np.stack([parse_box(box, where) for box in value]) if value else np.zeros((0, 6))


class BoxTable:
    """Ground-truth boxes and labels by ``(scene_id, object_id)`` from the ``boxes`` table."""

    def __init__(self, table: dict, where: str):
        if not isinstance(table, dict):
            raise EvaluationInputError(f"{where}: 'boxes' must map scene_id -> object_id -> {{box, label}}")
        self.where = where
        self.entries = {}
        for scene_id, objects in table.items():
            if not isinstance(objects, dict):
                raise EvaluationInputError(f"{where}: boxes[{scene_id!r}] must map object_id -> {{box, label}}")
            for object_id, entry in objects.items():
                place = f"{where}: boxes[{scene_id!r}][{object_id!r}]"
                if not isinstance(entry, dict) or "box" not in entry:
                    raise EvaluationInputError(f"{place} must be an object with a 'box'")
                self.entries[(str(scene_id), str(object_id))] = (parse_box(entry["box"], place), entry.get("label"))

    def box(self, scene_id, object_id) -> np.ndarray:
        return self._entry(scene_id, object_id)[0]

    def label(self, scene_id, object_id):
        return self._entry(scene_id, object_id)[1]

    def _entry(self, scene_id, object_id):
        key = (str(scene_id), str(object_id))
        if key not in self.entries:
            raise EvaluationInputError(f"{self.where}: no box for object {key[1]!r} of scene {key[0]!r}")
        return self.entries[key]


def read_annotations_with_boxes(source) -> tuple[list, BoxTable]:
    """``(records, BoxTable)`` from the ``{"annotations": [...], "boxes": {...}}`` input."""
    where = source_name(source, "annotations")
    data = read_annotations(source)
    if not isinstance(data, dict) or "annotations" not in data or "boxes" not in data:
        raise EvaluationInputError(
            f"{where}: expected {{\"annotations\": [...published records...], \"boxes\": {{scene: {{object: "
            f"{{\"box\": [cx, cy, cz, dx, dy, dz], \"label\": ...}}}}}}}} (see docs/evaluation.md)"
        )
    return data["annotations"], BoxTable(data["boxes"], where)
