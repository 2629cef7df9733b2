"""The toy grounding task of the 3D model (vega3d.training.toy_grounding) trained through the user's chain:
files on disk -> `vega3d train CONFIG` (HF Trainer, task-grouped sampler, 3D collator) -> `vega3d predict
scanrefer` -> `vega3d eval scanrefer`. Tiny RANDOM-WEIGHT LLaVA-Video 3D models, with and without the
generative branch (the `pixels` backbone on the view's depth as a grey image, passed as `generative_video`).

Each view of the procedural room becomes a posed_images scene folder (one frame: colour, depth, pose), its
grey depth image a second folder; each (view, box set) a ScanRefer-style record per expression; the box sets
are the `boxes` file (training proposals and prediction proposals alike).

    python benchmarks/toy_grounding_chain.py [--steps 300] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from vega3d.io import write_json

REPO = Path(__file__).resolve().parents[1]
SIZE = 56


def write_views(root: Path, num_views: int) -> None:
    """Scene folders ``view{v}`` (colour) and ``view{v}_depth`` (the depth as a grey image), one frame each."""
    from vega3d.scenes.synthetic import camera_path, render_view
    from vega3d.training.toy import depth_image

    focal = 0.9 * SIZE
    intrinsic = np.array([[focal, 0, (SIZE - 1) / 2, 0], [0, focal, (SIZE - 1) / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    for view, pose in enumerate(camera_path(num_views)):
        rgb, depth = render_view(pose, intrinsic, (SIZE, SIZE))
        grey = depth_image(depth.astype(np.float32), SIZE)
        for name, image in ((f"view{view:02d}", rgb), (f"view{view:02d}_depth", grey)):
            folder = root / name
            folder.mkdir(parents=True)
            np.savetxt(folder / "intrinsic.txt", intrinsic)
            np.savetxt(folder / "00000.txt", pose)
            Image.fromarray(image).save(folder / "00000.jpg", quality=100)
            Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(folder / "00000.png")


def write_task(root: Path, task: dict) -> dict:
    """Records, boxes and annotations of the toy task in the processed layout."""
    boxes, splits = {}, {"train": [], "eval": []}
    for split in splits:
        for sample in task[split]:
            scene_id, target, kind = sample["id"].split("|")
            view = scene_id.split("_")[1].removeprefix("view")
            boxes[f"scannet/{scene_id}"] = sample["boxes"].tolist()
            if not (root / "scenes" / scene_id).exists():
                (root / "scenes" / scene_id).symlink_to(root / "scenes" / f"view{view}", target_is_directory=True)
            splits[split].append({"id": sample["id"], "video": f"scannet/{scene_id}",
                                  "generative_video": f"scannet/view{view}_depth",
                                  "conversations": [{"from": "human", "value": f"<image>{sample['text']}"},
                                                    {"from": "gpt", "value": "<ground>"}],
                                  "metadata": {"dataset": "scanrefer", "object_id": target, "ann_id": kind}})
    files = {"boxes": root / "boxes.json", "train": root / "train.json", "eval": root / "eval.json",
             "annotations": root / "annotations.json"}
    for name, content in (("boxes", boxes), ("train", splits["train"]), ("eval", splits["eval"]),
                          ("annotations", task["annotations"])):
        files[name].write_text(json.dumps(content))
    return files


def run_variant(root: Path, files: dict, generative: bool, steps: int, seed: int) -> dict:
    from vega3d.cli import main
    from vega3d.models.llava_tiny import TINY_LABEL, build_tiny_llava
    from vega3d.models.settings import GenerativeSettings

    name = "generative_branch" if generative else "no_generative_branch"
    settings = GenerativeSettings(backbone="pixels", feature_dim=3, fusion="gated", fusion_options={"preset": "reference"},
                                  backbone_options={"grid": [SIZE // 28] * 2}, adapter_seed=seed) if generative else None
    model, tokenizer = build_tiny_llava(generative=settings, grounding={"seed": seed}, seed=seed, hidden_size=48,
                                        num_layers=2, image_size=SIZE)
    model.save_pretrained(root / name / "init")
    tokenizer.save_pretrained(root / name / "init")
    config = {"model": str(root / name / "init"),
              "data": {"train": str(files["train"]), "scenes": str(root / "scenes"), "boxes": str(files["boxes"]),
                       "num_frames": 1, "image_size": [SIZE, SIZE]},
              "training": {"output_dir": str(root / name / "run"), "max_steps": steps, "per_device_train_batch_size": 8,
                           "lr_llm": 1e-2, "lr_adapters": 1e-2, "lr_vision": 0, "warmup_steps": 0,
                           "lr_scheduler_type": "constant", "logging_steps": max(1, steps // 10), "save_strategy": "no",
                           "use_cpu": True, "seed": seed, "disable_tqdm": True}}
    (root / name / "train.yaml").write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    assert main(["train", str(root / name / "train.yaml")]) == 0
    seconds = time.perf_counter() - start
    predictions = root / name / "scanrefer.jsonl"
    assert main(["predict", "scanrefer", "--model", str(root / name / "run"), "--data", str(files["eval"]), "--out",
                 str(predictions), "--scenes", str(root / "scenes"), "--boxes", str(files["boxes"]), "--num-frames", "1",
                 "--device", "cpu"]) == 0
    from vega3d.evaluation import score

    metrics = score("scanrefer", predictions, files["annotations"])
    losses = [entry["loss"] for entry in json.loads((root / name / "run" / "train_summary.json").read_text())["log_history"]
              if "loss" in entry]
    return {"model": TINY_LABEL, "first_loss": losses[0], "last_loss": losses[-1], "Acc@0.25": metrics["Acc@0.25"],
            "Acc@0.5": metrics["Acc@0.5"], "eval_samples": metrics["num_samples"], "train_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids contention on shared cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from vega3d.training.toy_grounding import NUM_BOXES, build_toy_grounding

    start = time.perf_counter()
    task = build_toy_grounding(seed=args.seed, image_size=SIZE)
    result = {"train_samples": len(task["train"]), "eval_samples": len(task["eval"]), "chance_Acc@0.25": 100.0 / NUM_BOXES,
              "path": "vega3d train -> vega3d predict scanrefer -> vega3d eval scanrefer"}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_views(root / "scenes", num_views=48)
        files = write_task(root, task)
        for generative in (True, False):
            result["generative_branch" if generative else "no_generative_branch"] = run_variant(root, files, generative,
                                                                                                args.steps, args.seed)
    result.update(seconds=time.perf_counter() - start, steps=args.steps, seed=args.seed, threads=args.threads)
    print(f"model: {result['generative_branch']['model']}; {result['train_samples']} training / {result['eval_samples']} "
          f"held-out expressions; chance Acc@0.25 {result['chance_Acc@0.25']:.1f}; {result['path']}")
    print(f"{'variant':<24}{'first loss':>12}{'last loss':>12}{'Acc@0.25':>10}{'Acc@0.5':>10}{'train s':>10}")
    for variant in ("generative_branch", "no_generative_branch"):
        row = result[variant]
        print(f"{variant:<24}{row['first_loss']:>12.3f}{row['last_loss']:>12.3f}{row['Acc@0.25']:>10.1f}"
              f"{row['Acc@0.5']:>10.1f}{row['train_seconds']:>10.0f}")
    out = write_json(REPO / "benchmarks" / "results" / "toy_grounding_chain.json", result, sort_keys=True)
    print(f"wrote {out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
