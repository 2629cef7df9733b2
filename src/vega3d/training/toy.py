"""A toy task on the real scans whose answers are geometry: proof that the generative branch is used.

Each clip is 2 consecutive frames of a real RGB-D scan (one Qwen temporal group). Two questions per clip,
answered from the sensor depth:

* "Is the middle of the view near or far?"  -> near / far: median depth of the central third of the
  clip's pixels against the median of that value over all clips (balanced by construction);
* "Which side is nearer, left or right?"    -> left / right: the side third with the smaller median depth.

The semantic stream (Qwen's vision tower) sees the RGB frames. The generative stream is the registry's
weight-free ``pixels`` backbone applied to the *depth maps rendered as grey images* (depth / 4 m, holes
black): the geometry is in that stream because its input is the depth, a stand-in for the implicit 3D
of a world model that is far too large to train against on a CPU. The task only shows that training
through the gate makes the LLM use what the generative stream carries.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from vega3d.scenes import load_scene

QUESTIONS = {
    "depth": ("Is the middle of the view near or far?", ("near", "far")),
    "side": ("Which side is nearer, left or right?", ("left", "right")),
}
DEPTH_RANGE = 4.0  # metres mapped to white in the grey depth images


def _resize(array: np.ndarray, size: int, resample) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((size, size), resample))


def _median(depth: np.ndarray) -> float:
    valid = depth[depth > 0]
    return float(np.median(valid)) if valid.size else float("nan")


def build_toy_task(scene_dirs: list[Path], out_dir: str | Path, image_size: int = 112, clip_frames: int = 2,
                   frame_step: int = 1, block: int = 8) -> dict:
    """Write RGB and grey-depth frame folders plus ``train.jsonl`` / ``eval.jsonl``; returns a summary.

    Clips of ``clip_frames`` consecutive frames (every ``frame_step``-th usable frame) overlap with
    stride 1. Frames are split in blocks of ``block``: every 4th block is held out, and a clip is kept
    only when all its frames lie in one split, so no frame is shared by training and held-out clips.
    """
    out_dir = Path(out_dir)
    clips = []
    for scene_dir in scene_dirs:
        scene = load_scene(scene_dir)
        usable = scene.usable_frames()[::frame_step]
        depths = [scene.depth(i) for i in usable]
        for j, i in enumerate(usable):  # each frame written once, then linked into the clips that use it
            folder = out_dir / "frames" / scene.scene_id
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_resize(scene.color(i), image_size, Image.BILINEAR)).save(folder / f"{j:04d}_rgb.png")
            grey = (np.clip(depths[j] / DEPTH_RANGE, 0, 1) * 255).round().astype(np.uint8)
            Image.fromarray(_resize(grey, image_size, Image.NEAREST)).convert("RGB").save(folder / f"{j:04d}_depth.png")
        for k in range(len(usable) - clip_frames + 1):
            splits = {"eval" if (j // block) % 4 == 3 else "train" for j in range(k, k + clip_frames)}
            if len(splits) != 1:
                continue
            name = f"{scene.scene_id}_{k:03d}"
            for kind in ("rgb", "depth"):
                clip_dir = out_dir / kind / name
                clip_dir.mkdir(parents=True, exist_ok=True)
                for j in range(k, k + clip_frames):
                    target = clip_dir / f"{j - k:02d}.png"
                    if not target.exists():
                        target.hardlink_to(out_dir / "frames" / scene.scene_id / f"{j:04d}_{kind}.png")
            stack = np.stack(depths[k:k + clip_frames])
            h, w = stack.shape[1:]
            clips.append({
                "name": name, "split": splits.pop(),
                "centre": _median(stack[:, h // 3: 2 * h // 3, w // 3: 2 * w // 3]),
                "left": _median(stack[..., : w // 3]), "right": _median(stack[..., 2 * w // 3:]),
            })
    clips = [c for c in clips if np.isfinite([c["centre"], c["left"], c["right"]]).all()]
    threshold = float(np.median([c["centre"] for c in clips]))
    records = {"train": [], "eval": []}
    for clip in clips:
        answers = {"depth": "near" if clip["centre"] < threshold else "far",
                   "side": "left" if clip["left"] < clip["right"] else "right"}
        for kind, (question, _) in QUESTIONS.items():
            records[clip["split"]].append({
                "id": f"{clip['name']}_{kind}", "video": f"rgb/{clip['name']}", "generative_video": f"depth/{clip['name']}",
                "conversations": [{"from": "human", "value": f"<video>\n{question}"}, {"from": "gpt", "value": answers[kind]}],
            })
    for split, items in records.items():
        (out_dir / f"{split}.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items))
    return {"threshold_m": threshold, "train": len(records["train"]), "eval": len(records["eval"]),
            "eval_majority": _majority(records["eval"])}


def _majority(records: list[dict]) -> float:
    """Accuracy of always giving each question's most frequent held-out answer (the trivial baseline)."""
    best = 0
    for question, _ in QUESTIONS.values():
        answers = [r["conversations"][1]["value"] for r in records if question in r["conversations"][0]["value"]]
        best += max(answers.count(a) for a in set(answers)) if answers else 0
    return best / max(len(records), 1)


def run_toy(scene_dirs: list[Path], work_dir: str | Path, epochs: int = 10, seed: int = 0, image_size: int = 112,
            learning_rate: float = 2e-3, batch_size: int = 8, frame_step: int = 1) -> dict:
    """Train the same tiny random Qwen2.5-VL twice on the toy task, with and without the generative
    branch, and score greedy answers on the held-out clips (exact match)."""
    from vega3d.models import GenerativeSettings
    from vega3d.models.tiny import TINY_LABEL, build_tiny_model, save_tiny, tiny_processor
    from vega3d.serving import Assistant
    from vega3d.training.config import parse_config
    from vega3d.training.data import read_records
    from vega3d.training.trainer import train

    work_dir = Path(work_dir)
    task = build_toy_task(scene_dirs, work_dir / "task", image_size=image_size, frame_step=frame_step)
    processor = tiny_processor(image_size)
    base = save_tiny(work_dir / "base", processor, build_tiny_model(processor, seed=seed))
    generative = GenerativeSettings(backbone="pixels", feature_dim=3, backbone_options={"grid": [8, 8]}, adapter_seed=seed)
    results = {"task": task, "model": TINY_LABEL, "generative_backbone": "pixels (grid 8x8) on grey depth images"}
    for variant, settings in (("gated", generative), ("no_generative_branch", None)):
        output = work_dir / variant
        config = parse_config({
            "model": str(base),
            "generative": settings.to_dict() if settings else None,
            "data": {"train": str(work_dir / "task" / "train.jsonl"), "num_frames": 2, "image_size": [image_size, image_size]},
            "training": {"output_dir": str(output), "num_train_epochs": epochs, "per_device_train_batch_size": batch_size,
                         "lr_llm": learning_rate, "lr_vision": learning_rate, "lr_adapters": learning_rate,
                         "logging_steps": 5, "save_strategy": "no", "seed": seed, "use_cpu": True,
                         "disable_tqdm": True},
        }, source=f"toy {variant}")
        train(config)
        losses = [e["loss"] for e in json.loads((output / "train_summary.json").read_text())["log_history"] if "loss" in e]
        assistant = Assistant(output, num_frames=2, image_size=(image_size, image_size), device="cpu", max_new_tokens=8)
        records = read_records(work_dir / "task" / "eval.jsonl")
        correct = sum(
            assistant.ask(r.video, r.messages[0]["content"][-1]["text"], r.generative_video) == r.messages[1]["content"]
            for r in records
        )
        results[variant] = {"first_loss": losses[0], "last_loss": losses[-1], "losses": losses,
                            "eval_accuracy": correct / len(records), "eval_questions": len(records)}
    return results
