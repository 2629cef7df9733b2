"""Cost of the generative branch when serving: first question about a scene vs later questions (Fig. 7).

Both models answer the same questions about the same real scan with ``vega3d.serving.Assistant``:
``first`` includes reading and sampling the clip, Qwen's video inputs and (VEGA-3D only) the generative
features; ``repeat`` is a later question about the same clip, where all of that is reused. Each model
first answers one question about another scan, so that neither pays one-off start-up costs. By default
the models are tiny RANDOM Qwen2.5-VLs (labelled as such), so the numbers measure the pipeline's
overhead, not a real model's latency; pass --model/--baseline for real checkpoints.

    python benchmarks/overhead.py [--frames 8] [--repeats 5] [--backbone pixels --backbone-options '{"grid": [14, 14]}']
    python benchmarks/overhead.py --backbone wan2.1-t2v-1.3b --backbone-weights random \
        --backbone-options '{"size": [112, 112], "device": "cpu"}'      # the real architecture, RANDOM weights
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vega3d.io import write_json

REPO = Path(__file__).resolve().parents[1]
SCENES = Path(os.environ.get("VEGA3D_SHARED_DATA", REPO.parent / "shared" / "data")) / "scenes"
SCENE, WARMUP = SCENES / "posed_images/hololens_office_000", SCENES / "scannet_export/tabletop_000"
QUESTIONS = ["Where is the desk?", "How many chairs are there?", "Is the door left of the window?"]


def tiny_models(folder: Path, backbone: str, weights: str | None, options: dict, image_size: int) -> tuple[Path, Path, str]:
    from vega3d.backbones import load_backbone
    from vega3d.models import GenerativeSettings
    from vega3d.models.tiny import TINY_LABEL, build_tiny_model, save_tiny, tiny_processor

    probe = load_backbone(backbone, weights, **options)
    settings = GenerativeSettings(backbone=backbone, feature_dim=probe(torch.rand(1, 3, 64, 64)).shape[-1],
                                  backbone_weights=weights, backbone_options=options)
    del probe
    processor = tiny_processor(image_size)
    vega = save_tiny(folder / "vega", processor, build_tiny_model(processor, settings, seed=0))
    plain = save_tiny(folder / "plain", processor, build_tiny_model(processor, seed=0))
    return vega, plain, TINY_LABEL


def measure(model: Path, scene: Path, frames: int, image_size: int, repeats: int) -> dict:
    from vega3d.serving import Assistant

    assistant = Assistant(model, num_frames=frames, image_size=(image_size, image_size), device="cpu", max_new_tokens=8)
    assistant.ask(WARMUP, QUESTIONS[0])  # lazy imports, first-call allocations, building the generative backbone
    start = time.perf_counter()
    assistant.ask(scene, QUESTIONS[0])
    first = time.perf_counter() - start
    repeat = []
    for i in range(repeats):
        start = time.perf_counter()
        assistant.ask(scene, QUESTIONS[(i + 1) % len(QUESTIONS)])
        repeat.append(time.perf_counter() - start)
    return {"first_s": first, "repeat_median_s": statistics.median(repeat), "repeat_s": repeat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", type=Path, default=SCENE)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backbone", default="pixels")
    parser.add_argument("--backbone-weights", default=None, help="e.g. a Wan folder, or 'random' (labelled)")
    parser.add_argument("--backbone-options", type=json.loads, default={"grid": [14, 14]})
    parser.add_argument("--model", type=Path, help="VEGA-3D checkpoint (default: tiny random)")
    parser.add_argument("--baseline", type=Path, help="the same model without the generative branch")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            vega, plain, label = tiny_models(Path(tmp), args.backbone, args.backbone_weights, args.backbone_options, args.image_size)
        else:
            vega, plain, label = args.model, args.baseline, str(args.model)
        rows = {"vega3d": measure(vega, args.scene, args.frames, args.image_size, args.repeats),
                "no_generative_branch": measure(plain, args.scene, args.frames, args.image_size, args.repeats)}
    result = {"model": label, "backbone": args.backbone, "backbone_weights": args.backbone_weights,
              "backbone_options": args.backbone_options,
              "scene": args.scene.name, "frames": args.frames, "image_size": args.image_size,
              "threads": torch.get_num_threads(), "results": rows}
    print(f"model: {label}; generative backbone: {args.backbone} (weights {args.backbone_weights}) {args.backbone_options}; "
          f"{args.frames} frames of {args.scene.name}")
    print(f"{'model':<22}{'first question (s)':>20}{'repeat, median (s)':>20}")
    for name, row in rows.items():
        print(f"{name:<22}{row['first_s']:>20.3f}{row['repeat_median_s']:>20.3f}")
    name = "overhead.json" if args.backbone == "pixels" else f"overhead_{args.backbone}.json"
    print(f"wrote {write_json(REPO / 'benchmarks' / 'results' / name, result, sort_keys=True)}")


if __name__ == "__main__":
    main()
