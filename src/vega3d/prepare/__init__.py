"""Data preparation for the five ScanNet tasks (``vega3d prepare ...``): boxes, proposals, processed records."""

from vega3d.prepare.boxes import gt_box_list, gt_boxes, json_proposals, mask_proposals
from vega3d.prepare.inputs import MANIFEST, PrepareError, verify_manifest
from vega3d.prepare.tasks import (BoxFile, build_multi3drefer, build_scan2cap, build_scanqa, build_scanrefer,
                                  build_sqa3d, evaluation_id, mixture_yaml, read_label_map, scanrefer_eval_types)

__all__ = [
    "MANIFEST", "BoxFile", "PrepareError", "build_multi3drefer", "build_scan2cap", "build_scanqa", "build_scanrefer",
    "build_sqa3d", "evaluation_id", "gt_box_list", "gt_boxes", "json_proposals", "mask_proposals", "mixture_yaml", "read_label_map",
    "scanrefer_eval_types", "verify_manifest",
]
