"""Box IoU, ScanRefer Acc@k and Multi3DRefer F1@k against hand-computed values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vega3d.evaluation import EvaluationInputError, box_iou_3d, score
from vega3d.evaluation.grounding import matched_ious

CUBE = [0, 0, 0, 2, 2, 2]  # volume 8
HALF = [0, 0, 0, 2, 2, 1]  # inside CUBE, volume 4: IoU exactly 0.5
QUARTER = [0, 0, 0, 2, 1, 1]  # inside CUBE, volume 2: IoU exactly 0.25


def shifted(box, dx):
    return [box[0] + dx, *box[1:]]


def test_box_iou_hand_values():
    assert box_iou_3d(CUBE, CUBE) == 1.0
    assert box_iou_3d(CUBE, HALF) == 0.5
    assert box_iou_3d(CUBE, QUARTER) == 0.25
    assert box_iou_3d(CUBE, shifted(CUBE, 1)) == pytest.approx(4 / 12)  # overlap 1x2x2, union 8+8-4
    assert box_iou_3d(CUBE, shifted(CUBE, 2)) == 0.0  # touching faces
    assert box_iou_3d(CUBE, [0, 0, 0, 0, 0, 0]) == 0.0  # zero volume
    assert box_iou_3d([0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]) == 0.0


def test_box_iou_broadcasts_and_is_symmetric():
    a = np.array([CUBE, shifted(CUBE, 1)])
    b = np.array([CUBE, HALF, shifted(CUBE, 5)])
    pairwise = box_iou_3d(a[:, None], b[None, :])
    assert pairwise.shape == (2, 3)
    for i, j in itertools.product(range(2), range(3)):
        assert pairwise[i, j] == pytest.approx(box_iou_3d(a[i], b[j]))
        assert box_iou_3d(a[i], b[j]) == pytest.approx(box_iou_3d(b[j], a[i]))


def test_box_iou_rejects_bad_boxes():
    with pytest.raises(ValueError, match="6 values"):
        box_iou_3d([0, 0, 0, 1, 1], CUBE)
    with pytest.raises(ValueError, match="non-negative"):
        box_iou_3d([0, 0, 0, 1, -1, 1], CUBE)


def scanrefer_annotations():
    boxes = {
        "scene0": {
            "1": {"box": CUBE, "label": "chair"},
            "2": {"box": shifted(CUBE, 10), "label": "chair"},
            "3": {"box": [0, 10, 0, 2, 2, 2], "label": "table"},
            "4": {"box": [0, 20, 0, 2, 2, 2], "label": "table"},  # never referred: does not make 3 "multiple"
        },
        "scene1": {"5": {"box": CUBE, "label": "chair"}},
    }
    record = lambda scene, obj, ann, **extra: {  # noqa: E731
        "scene_id": scene, "object_id": obj, "object_name": "x", "ann_id": ann, "description": "d", **extra
    }
    return {
        "annotations": [
            record("scene0", "1", "0"),  # multiple (two chairs referred in scene0)
            record("scene0", "2", "0"),  # multiple
            record("scene0", "3", "0"),  # unique
            record("scene0", "3", "1"),  # unique, no prediction
            record("scene1", "5", "0"),  # unique
            record("scene1", "5", "1", eval_type="multiple"),  # the record's own flag wins
        ],
        "boxes": boxes,
    }


def test_scanrefer_golden(write_jsonl, write_json):
    predictions = write_jsonl("preds.jsonl", [
        {"id": "scene0|1|0", "box": HALF},  # IoU 0.5: counts at both thresholds (inclusive)
        {"id": "scene0|2|0", "box": shifted(QUARTER, 10)},  # IoU 0.25: counts at 0.25 only
        {"id": "scene0|3|0", "box": [1, 10, 0, 2, 2, 2]},  # IoU 1/3
        {"id": "scene1|5|0", "box": shifted(CUBE, 7)},  # IoU 0
        {"id": "scene1|5|1", "box": CUBE},  # IoU 1
    ])
    metrics = score("scanrefer", predictions, write_json("scanrefer.json", scanrefer_annotations()))
    assert metrics["Acc@0.25"] == pytest.approx(100 * 4 / 6)
    assert metrics["Acc@0.5"] == pytest.approx(100 * 2 / 6)
    assert metrics["unique/Acc@0.25"] == pytest.approx(100 * 1 / 3)
    assert metrics["unique/Acc@0.5"] == 0.0
    assert metrics["multiple/Acc@0.25"] == pytest.approx(100.0)
    assert metrics["multiple/Acc@0.5"] == pytest.approx(100 * 2 / 3)
    assert metrics["unique/num_samples"] == 3 and metrics["multiple/num_samples"] == 3
    assert metrics["num_samples"] == 6 and metrics["num_missing"] == 1


def test_scanrefer_empty_predictions_score_zero(write_jsonl):
    metrics = score("scanrefer", write_jsonl("empty.jsonl", []), scanrefer_annotations())
    assert metrics["Acc@0.25"] == 0.0 and metrics["Acc@0.5"] == 0.0
    assert metrics["num_missing"] == 6


def test_scanrefer_needs_labels_or_eval_type():
    annotations = scanrefer_annotations()
    del annotations["boxes"]["scene0"]["1"]["label"]
    with pytest.raises(EvaluationInputError, match="object '1' of scene 'scene0' has no 'label'"):
        score("scanrefer", [], annotations)


def multi3drefer_annotations():
    boxes = {"scene0": {"1": {"box": CUBE}, "2": {"box": shifted(CUBE, 10)}, "3": {"box": [0, 10, 0, 2, 2, 2]}}}
    record = lambda ann, objects, kind: {  # noqa: E731
        "scene_id": "scene0", "ann_id": ann, "object_ids": objects, "eval_type": kind, "description": "d"
    }
    return {
        "annotations": [
            record(0, [], "zt_wo_d"),
            record(1, [], "zt_w_d"),
            record(2, [1], "st_wo_d"),
            record(3, [1], "st_w_d"),
            record(4, [1, 2, 3], "mt"),
        ],
        "boxes": boxes,
    }


def test_multi3drefer_golden(write_jsonl):
    predictions = write_jsonl("preds.jsonl", [
        {"id": "scene0|0", "boxes": []},  # both empty: F1 = 1
        {"id": "scene0|1", "boxes": [CUBE]},  # no target but a box: 0
        {"id": "scene0|2", "boxes": []},  # a target but no box: 0
        {"id": "scene0|3", "boxes": [HALF, shifted(CUBE, 30)]},  # TP 1 of (2 pred, 1 gt): 2/3
        {"id": "scene0|4", "boxes": [shifted(QUARTER, 10), CUBE]},  # IoUs 0.25 and 1 of 3 targets
    ])
    metrics = score("multi3drefer", predictions, multi3drefer_annotations())
    per_sample_25 = [1, 0, 0, 2 / 3, 4 / 5]
    per_sample_50 = [1, 0, 0, 2 / 3, 2 / 5]
    assert metrics["F1@0.25"] == pytest.approx(100 * np.mean(per_sample_25))
    assert metrics["F1@0.5"] == pytest.approx(100 * np.mean(per_sample_50))
    expected_types = {"zt_wo_d": (100, 100), "zt_w_d": (0, 0), "st_wo_d": (0, 0), "st_w_d": (200 / 3, 200 / 3),
                      "mt": (80, 40)}
    for kind, (f1_25, f1_50) in expected_types.items():
        assert metrics[f"{kind}/F1@0.25"] == pytest.approx(f1_25)
        assert metrics[f"{kind}/F1@0.5"] == pytest.approx(f1_50)
    assert metrics["num_missing"] == 0


def test_multi3drefer_missing_prediction_scores_zero_even_for_no_target():
    metrics = score("multi3drefer", [{"id": "scene0|1", "boxes": []}], multi3drefer_annotations())
    assert metrics["zt_w_d/F1@0.25"] == 100.0  # predicted "no target", correctly
    assert metrics["zt_wo_d/F1@0.25"] == 0.0  # no prediction at all
    assert metrics["num_missing"] == 4


def box_x(centre, length):
    return np.array([centre, 0, 0, length, 1, 1], dtype=float)


def test_hungarian_matching_beats_greedy_assignment():
    # 1-D intervals: gt1 [0,4], gt2 [2,6]; A [0.8,4.8] overlaps gt1 most (0.667) but also gt2 (0.538);
    # B [0,3] only fits gt1 (0.75). Matching A->gt1 first leaves B with 0.167; Hungarian pairs A-gt2, B-gt1.
    targets = np.stack([box_x(2, 4), box_x(4, 4)])
    guesses = np.stack([box_x(2.8, 4), box_x(1.5, 3)])
    ious = matched_ious(guesses, targets)
    assert sorted(ious) == pytest.approx(sorted([2.8 / 5.2, 3 / 4]))
    brute_force = max(
        (box_iou_3d(guesses[0], targets[i]) + box_iou_3d(guesses[1], targets[1 - i])) for i in range(2)
    )
    assert ious.sum() == pytest.approx(brute_force)
    annotations = {
        "annotations": [{"scene_id": "s", "ann_id": 0, "object_ids": ["a", "b"], "eval_type": "mt"}],
        "boxes": {"s": {"a": {"box": targets[0].tolist()}, "b": {"box": targets[1].tolist()}}},
    }
    metrics = score("multi3drefer", [{"id": "s|0", "boxes": guesses.tolist()}], annotations)
    assert metrics["F1@0.5"] == pytest.approx(100.0)
