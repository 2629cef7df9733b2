"""Scoring time of every `vega3d.evaluation` benchmark at the size of its public evaluation split.

Synthetic, seeded inputs (random boxes, words and answers; the scores themselves mean nothing):
the point is that scoring a full split takes seconds, not minutes. METEOR (Java) is left out unless
``--meteor`` (results then go to ``eval_speed_meteor.json``): its start-up dominates it.

    PYTHONPATH=src python benchmarks/eval_speed.py [--meteor] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from vega3d.evaluation import TABLE_COLUMNS, score
from vega3d.io import write_json
from vega3d.evaluation.vsibench import NUMERIC_TASKS, QUESTION_TYPES

# Annotation records of each public evaluation split (descriptions / questions); Scan2Cap scores the
# objects of the ScanRefer val descriptions (here up to 20 per synthetic scene).
SPLIT_SIZES = {"scanrefer": 9508, "multi3drefer": 11120, "scan2cap": 9508, "scanqa": 4675, "sqa3d": 3519,
               "vsibench": 5130}
WORDS = "the a chair table red brown big small left right of on near wall door window bed lamp".split()


def sentence(rng, length):
    return " ".join(rng.choice(WORDS, size=length))


def random_boxes(rng, count):
    return np.concatenate([rng.uniform(-4, 4, (count, 3)), rng.uniform(0.2, 2, (count, 3))], axis=1)


def box_inputs(rng, count, objects_per_scene=20):
    """Annotations with the box table, and boxes jittered around the targets."""
    scenes = [f"scene{i:04d}_00" for i in range(max(1, count // 50))]
    table = {s: {str(o): {"box": b.tolist(), "label": WORDS[o % 8]}
                 for o, b in enumerate(random_boxes(rng, objects_per_scene))} for s in scenes}
    return scenes, table


def jitter(rng, box):
    box = np.asarray(box)
    return [*(box[:3] + rng.normal(0, 0.2, 3)), *np.maximum(box[3:] + rng.normal(0, 0.1, 3), 0.05)]


def make_inputs(benchmark, count, rng):
    if benchmark in ("scanrefer", "scan2cap"):
        scenes, table = box_inputs(rng, count)
        records = [{"scene_id": s, "object_id": str(rng.integers(20)), "ann_id": str(i),
                    "description": sentence(rng, 12)} for i, s in enumerate(rng.choice(scenes, count))]
        if benchmark == "scanrefer":
            predictions = [{"id": f"{r['scene_id']}|{r['object_id']}|{r['ann_id']}",
                            "box": jitter(rng, table[r["scene_id"]][r["object_id"]]["box"])} for r in records]
        else:
            predictions = [{"id": f"{s}|p{o}", "scene_id": s, "box": jitter(rng, entry["box"]),
                            "caption": sentence(rng, 10)} for s in scenes for o, entry in table[s].items()]
        return predictions, {"annotations": records, "boxes": table}
    if benchmark == "multi3drefer":
        scenes, table = box_inputs(rng, count)
        records, predictions = [], []
        for i, s in enumerate(rng.choice(scenes, count)):
            objects = [str(o) for o in rng.choice(20, size=rng.integers(0, 4), replace=False)]
            records.append({"scene_id": s, "ann_id": i, "object_ids": objects, "eval_type": "mt"})
            predictions.append({"id": f"{s}|{i}", "boxes": [jitter(rng, table[s][o]["box"]) for o in objects]})
        return predictions, {"annotations": records, "boxes": table}
    if benchmark == "scanqa":
        records = [{"question_id": f"q{i}", "answers": [sentence(rng, 2), sentence(rng, 3)]} for i in range(count)]
        return [{"id": f"q{i}", "answer": sentence(rng, 2)} for i in range(count)], records
    if benchmark == "sqa3d":
        questions = {"questions": [{"question_id": i, "question": "What " + sentence(rng, 6)} for i in range(count)]}
        answers = {"annotations": [{"question_id": i, "answers": [{"answer": str(rng.choice(WORDS))}]}
                                   for i in range(count)]}
        return [{"id": i, "answer": str(rng.choice(WORDS))} for i in range(count)], [questions, answers]
    rows, predictions = [], []
    for i in range(count):
        kind = QUESTION_TYPES[i % len(QUESTION_TYPES)]
        numeric = kind in NUMERIC_TASKS
        rows.append({"id": i, "question_type": kind, "ground_truth": f"{rng.uniform(1, 9):.1f}" if numeric else "A"})
        predictions.append({"id": i, "answer": f"{rng.uniform(1, 9):.1f}" if numeric else str(rng.choice(list("ABCD")))})
    return predictions, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meteor", action="store_true", help="include METEOR for scan2cap/scanqa (Java)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each split size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = []
    print(f"{'benchmark':<13}{'samples':>9}{'seconds':>9}   headline metric (random data)")
    for benchmark, size in SPLIT_SIZES.items():
        count = max(1, int(size * args.scale))
        predictions, annotations = make_inputs(benchmark, count, np.random.default_rng(args.seed))
        options = {"with_meteor": args.meteor} if benchmark in ("scan2cap", "scanqa") else {}
        start = time.perf_counter()
        metrics = score(benchmark, predictions, annotations, **options)
        seconds = time.perf_counter() - start
        headline = TABLE_COLUMNS[benchmark][0][1]
        print(f"{benchmark:<13}{count:>9}{seconds:>9.2f}   {headline} = {metrics[headline]:.1f}")
        results.append({"benchmark": benchmark, "samples": count, "seconds": round(seconds, 3),
                        "meteor": bool(options.get("with_meteor"))})
    out = Path(__file__).parent / "results" / ("eval_speed_meteor.json" if args.meteor else "eval_speed.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "seed": args.seed,
              "scale": args.scale, "results": results}
    print(f"wrote {write_json(out, report)}")


if __name__ == "__main__":
    main()
