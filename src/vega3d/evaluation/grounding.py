"""3-D visual grounding: ScanRefer (one target) and Multi3DRefer (zero, one or many targets).

Sample ids: ScanRefer ``"<scene_id>|<object_id>|<ann_id>"``, Multi3DRefer ``"<scene_id>|<ann_id>"``.
A ground-truth sample without a prediction scores 0 (IoU 0 / F1 0) and is counted in ``num_missing``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy.optimize import linear_sum_assignment

from vega3d.evaluation.boxes import box_iou_3d, parse_box, parse_boxes, read_annotations_with_boxes
from vega3d.evaluation.inputs import EvaluationInputError, check_known, index_records, read_predictions
from vega3d.evaluation.tally import check_convention, grouped_percent, percent

THRESHOLDS = (0.25, 0.5)
SCANREFER_GROUPS = ("unique", "multiple")
RELEASED_IOU_EPSILON = 1e-8  # the released ScanRefer script: intersection / (union + 1e-8)
MULTI3DREFER_TYPES = ("zt_w_d", "zt_wo_d", "st_w_d", "st_wo_d", "mt")


def _scanrefer_groups(records: dict, boxes) -> dict:
    """``unique`` when no other referred object of the scene has the target's label, else ``multiple``.

    A record's own ``eval_type`` ("unique"/"multiple", as in preprocessed releases) wins; otherwise
    the labels come from the box table, counted over the objects the annotations refer to (ScanRefer's
    convention: objects of the split, not every instance of the scan).
    """
    labels = {}
    for record in records.values():
        key = (str(record["scene_id"]), str(record["object_id"]))
        if key not in labels and "eval_type" not in record:
            label = boxes.label(*key)
            if label is None:
                raise EvaluationInputError(
                    f"{boxes.where}: object {key[1]!r} of scene {key[0]!r} has no 'label' (needed for "
                    "unique/multiple) and its records carry no 'eval_type'"
                )
            labels[key] = label
    per_scene = Counter((scene_id, label) for (scene_id, _), label in labels.items())
    groups = {}
    for sample_id, record in records.items():
        group = record.get("eval_type")
        if group is None:
            key = (str(record["scene_id"]), str(record["object_id"]))
            group = "unique" if per_scene[(key[0], labels[key])] == 1 else "multiple"
        if group not in SCANREFER_GROUPS:
            raise EvaluationInputError(f"ScanRefer annotation {sample_id!r}: eval_type must be unique or multiple")
        groups[sample_id] = group
    return groups


def score_scanrefer(predictions, annotations, convention: str = "field") -> dict:
    """Acc@0.25 / Acc@0.5 (x100): share of samples whose predicted box has IoU >= threshold.

    ``convention="released"``: the IoU denominator gets the released script's ``+ 1e-8``."""
    epsilon = RELEASED_IOU_EPSILON if check_convention(convention) == "released" else 0.0
    records, boxes = read_annotations_with_boxes(annotations)
    samples = index_records(records, ("scene_id", "object_id", "ann_id"), "ScanRefer annotations")
    predicted = read_predictions(predictions, required=("box",))
    check_known(predicted, samples)
    ious = {}
    for sample_id, record in samples.items():
        target = boxes.box(record["scene_id"], record["object_id"])  # checked even without a prediction
        prediction = predicted.get(sample_id)
        ious[sample_id] = 0.0 if prediction is None else box_iou_3d(
            parse_box(prediction.fields["box"], prediction.where), target, epsilon
        )
    groups = _scanrefer_groups(samples, boxes)
    metrics = {}
    for threshold in THRESHOLDS:
        hits = {sample_id: iou >= threshold for sample_id, iou in ious.items()}
        metrics[f"Acc@{threshold}"] = percent(hits.values())
        metrics.update(grouped_percent(hits, groups, SCANREFER_GROUPS, f"Acc@{threshold}"))
    metrics.update(num_samples=len(samples), num_missing=len(samples) - len(predicted))
    return metrics


def matched_ious(predicted_boxes: np.ndarray, target_boxes: np.ndarray) -> np.ndarray:
    """IoUs of the one-to-one pairs that maximise the total IoU (Hungarian matching)."""
    if len(predicted_boxes) == 0 or len(target_boxes) == 0:
        return np.zeros(0)
    iou = box_iou_3d(predicted_boxes[:, None], target_boxes[None, :])
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return iou[rows, cols]


def grounding_f1(num_predicted: int, num_targets: int, pair_ious: np.ndarray, threshold: float) -> float:
    """F1 = 2 TP / (n_pred + n_gt); both empty is a correct "no target" answer (1), one empty is 0."""
    if num_predicted == 0 and num_targets == 0:
        return 1.0
    return 2.0 * int((pair_ious >= threshold).sum()) / (num_predicted + num_targets)


def score_multi3drefer(predictions, annotations) -> dict:
    """F1@0.25 / F1@0.5 (x100), overall and per ``eval_type``, averaged over samples."""
    records, boxes = read_annotations_with_boxes(annotations)
    samples = index_records(
        records, ("scene_id", "ann_id"), "Multi3DRefer annotations", required=("object_ids", "eval_type")
    )
    predicted = read_predictions(predictions, required=("boxes",))
    check_known(predicted, samples)
    f1 = {threshold: {} for threshold in THRESHOLDS}
    groups = {}
    for sample_id, record in samples.items():
        groups[sample_id] = record.get("eval_type")
        if groups[sample_id] not in MULTI3DREFER_TYPES:
            raise EvaluationInputError(
                f"Multi3DRefer annotation {sample_id!r}: eval_type must be one of {', '.join(MULTI3DREFER_TYPES)}"
            )
        if not isinstance(record["object_ids"], list):
            raise EvaluationInputError(f"Multi3DRefer annotation {sample_id!r}: object_ids must be a list")
        targets = np.array([boxes.box(record["scene_id"], o) for o in record["object_ids"]]).reshape(-1, 6)
        prediction = predicted.get(sample_id)
        if prediction is None:
            for threshold in THRESHOLDS:
                f1[threshold][sample_id] = 0.0
            continue
        guesses = parse_boxes(prediction.fields["boxes"], prediction.where)
        pair_ious = matched_ious(guesses, targets)
        for threshold in THRESHOLDS:
            f1[threshold][sample_id] = grounding_f1(len(guesses), len(targets), pair_ious, threshold)
    metrics = {}
    for threshold in THRESHOLDS:
        metrics[f"F1@{threshold}"] = percent(f1[threshold].values())
        metrics.update(grouped_percent(f1[threshold], groups, MULTI3DREFER_TYPES, f"F1@{threshold}"))
    metrics.update(num_samples=len(samples), num_missing=len(samples) - len(predicted))
    return metrics
