"""Time of the `vega3d prepare` steps and the task-grouped sampler at the size of the public ScanNet data.

Synthetic, seeded inputs in the official formats: ScanNet-size scans (150k mesh vertices, 3,000 segments,
40 objects; a ScanNet v2 ``_vh_clean_2`` mesh has 50k-300k vertices), ScanRefer-size train and val
files (36,665 and 9,508 descriptions over 562 and 141 scenes), 50 proposals per val scene, and a
five-task mixture of 150k records for the sampler. The point: each step takes seconds, not hours.

    PYTHONPATH=src python benchmarks/prepare.py [--scans 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from vega3d.io import write_json
from vega3d.prepare import BoxFile, build_scan2cap, build_scanrefer, gt_box_list
from vega3d.training.sampler import task_megabatches

WORDS = "the a chair table red brown big small left right of on near wall door window bed lamp".split()


def write_scan(folder: Path, rng, vertices=150_000, segments=3000, objects=40) -> None:
    from plyfile import PlyData, PlyElement

    folder.mkdir(parents=True)
    scene = folder.name
    vertex = np.zeros(vertices, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for axis in "xyz":
        vertex[axis] = rng.uniform(0, 8, vertices)
    PlyData([PlyElement.describe(vertex, "vertex")]).write(str(folder / f"{scene}_vh_clean_2.ply"))
    seg_indices = rng.integers(0, segments, vertices)
    groups = [{"id": o, "objectId": o, "label": WORDS[o % len(WORDS)], "segments": part.tolist()}
              for o, part in enumerate(np.array_split(rng.permutation(segments)[: segments // 2], objects))]
    (folder / f"{scene}.aggregation.json").write_text(json.dumps({"segGroups": groups}))
    (folder / f"{scene}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": seg_indices.tolist()}))
    (folder / f"{scene}.txt").write_text("axisAlignment = " + " ".join(map(str, np.eye(4).ravel())) + "\n")


def scanrefer_files(tmp: Path, rng, count: int, scenes: int, split: str) -> tuple[Path, Path]:
    boxes = {f"scannet/scene{s:04d}_00": np.c_[rng.uniform(0, 8, (40, 3)), rng.uniform(0.2, 2, (40, 3))].tolist()
             for s in range(scenes)}
    records = [{"scene_id": f"scene{s:04d}_00", "object_id": str(o), "object_name": WORDS[o % len(WORDS)],
                "ann_id": str(i % 5), "description": " ".join(rng.choice(WORDS, 14))}
               for i, (s, o) in enumerate(zip(rng.integers(0, scenes, count), rng.integers(0, 40, count)))]
    (tmp / f"ScanRefer_filtered_{split}.json").write_text(json.dumps(records))
    (tmp / f"scannet_{split}_gt_box.json").write_text(json.dumps(boxes))
    return tmp / f"ScanRefer_filtered_{split}.json", tmp / f"scannet_{split}_gt_box.json"


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=4, help="ScanNet-size scans to time (default 4)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for i in range(args.scans):
            write_scan(tmp / "scans" / f"scene{i:04d}_00", rng)
        _, seconds = timed(lambda: [gt_box_list(tmp / "scans" / f"scene{i:04d}_00") for i in range(args.scans)])
        rows.append(("gt boxes, per ScanNet-size scan (150k vertices)", args.scans, seconds / args.scans,
                     f"x 1,513 scans = {seconds / args.scans * 1513 / 60:.1f} min"))
        labels = {name: 5 for name in WORDS}
        train, train_boxes = scanrefer_files(tmp, rng, 36_665, 562, "train")
        _, seconds = timed(lambda: build_scanrefer(train, BoxFile(train_boxes), labels, "train"))
        rows.append(("scanrefer train records", 36_665, seconds, ""))
        val, val_boxes = scanrefer_files(tmp, rng, 9_508, 141, "val")
        proposals = tmp / "scannet_val_pred_box.json"
        proposals.write_text(json.dumps({k: (np.asarray(v[:50]) + rng.normal(0, 0.1, (40, 6)).clip(-0.1, 0.1)).tolist()
                                         for k, v in json.loads(val_boxes.read_text()).items()}))
        files, seconds = timed(lambda: build_scan2cap(val, BoxFile(val_boxes), "val", BoxFile(proposals)))
        matched = sum(r["box_input"] is not None for r in files["scan2cap_val_llava_style.json"])
        rows.append(("scan2cap val records (best proposal of 40, IoU >= 0.5)", len(files["scan2cap_val_llava_style.json"]),
                     seconds, f"{matched} matched"))
    tasks = rng.choice(3, 150_000, p=[0.45, 0.25, 0.30])
    lengths = rng.integers(5, 80, 150_000)
    _, seconds = timed(lambda: task_megabatches(tasks, lengths, 128, seed=0))
    rows.append(("task-grouped order, one epoch (megabatch 128)", 150_000, seconds, ""))
    print(f"{'step':58s} {'items':>8s} {'seconds':>9s}  note")
    for name, items, seconds, note in rows:
        print(f"{name:58s} {items:8d} {seconds:9.2f}  {note}")
    write_json(Path(__file__).parent / "results" / "prepare.json", {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "rows": [{"step": n, "items": i, "seconds": round(s, 3), "note": note} for n, i, s, note in rows],
    })


if __name__ == "__main__":
    main()
