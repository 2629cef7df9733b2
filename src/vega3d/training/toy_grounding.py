"""A toy grounding task in the bundled procedural room whose answers are geometry.

Each sample is one view of the room (``vega3d.scenes.synthetic``: its camera orbit, exact depth and poses)
and four boxes cut from the room at random (seeded, not overlapping); the expression asks for the box nearest
the door (a point on the room's x = 6 m wall), the one farthest from it, the highest or the lowest one
(box centres). Views are split in blocks along the orbit: every 4th block is held out, and every held-out
sample has boxes never seen in training.

The model is the tiny RANDOM-WEIGHT LLaVA-Video 3D model (models/llava_tiny.py), trained on CPU with the
InfoNCE grounding loss only (its vision tower frozen). As in the Qwen toy (training/toy.py), the generative
stream is the weight-free ``pixels`` backbone on the view's depth rendered as a grey image: a stand-in for a
world model's implicit geometry. The baseline has the same model without the generative branch; both get the
3-D position code on every visual token and every box. Scored with ``vega3d.evaluation.score("scanrefer")``.
"""

from __future__ import annotations

import numpy as np
import torch

from vega3d.backbones import load_backbone
from vega3d.evaluation import score
from vega3d.scenes.geometry import unproject_depth
from vega3d.scenes.synthetic import ROOM, camera_path, render_view
from vega3d.training.toy import depth_image

DOOR = np.array([6.0, 2.5, 1.0])
#: expression -> (text, the quantity the answer minimises)
EXPRESSIONS = {
    "door_nearest": ("Find the box nearest the door.", lambda boxes: np.linalg.norm(boxes[:, :3] - DOOR, axis=1)),
    "door_farthest": ("Find the box farthest from the door.", lambda boxes: -np.linalg.norm(boxes[:, :3] - DOOR, axis=1)),
    "highest": ("Find the highest box.", lambda boxes: -boxes[:, 2]),
    "lowest": ("Find the lowest box.", lambda boxes: boxes[:, 2]),
}
NUM_BOXES = 4


def _random_boxes(rng: np.random.Generator) -> np.ndarray:
    """Four non-overlapping boxes inside the room whose answer quantities differ by >= 0.3 m."""
    low, high = ROOM
    while True:
        size = rng.uniform(0.4, 1.0, size=(NUM_BOXES, 3))
        centre = rng.uniform(low + size / 2, high - size / 2)
        boxes = np.concatenate([centre, size], axis=1)
        values = np.stack([rule(boxes) for _, rule in EXPRESSIONS.values()])
        gaps = (np.abs(values[:, :, None] - values[:, None]) + np.eye(NUM_BOXES) * 9).min()
        separated = np.any(np.abs(centre[:, None] - centre[None]) >= (size[:, None] + size[None]) / 2, axis=-1)
        if gaps >= 0.3 and (separated | np.eye(NUM_BOXES, dtype=bool)).all():
            return boxes


def build_toy_grounding(num_views: int = 48, image_size: int = 56, boxes_per_view: int = 2, block: int = 4,
                        seed: int = 0) -> dict:
    """Samples (tensors per view) split into ``train`` / ``eval``, plus the ScanRefer-style annotations."""
    rng = np.random.default_rng(seed)
    focal = 0.9 * image_size
    intrinsic = np.array([[focal, 0, (image_size - 1) / 2], [0, focal, (image_size - 1) / 2], [0, 0, 1.0]])
    pixels = load_backbone("pixels", grid=[image_size // 28] * 2)
    splits = {"train": [], "eval": []}
    annotations, table = [], {}
    for view, pose in enumerate(camera_path(num_views)):
        rgb, depth = render_view(pose, intrinsic, (image_size, image_size))
        frames = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        grey = torch.from_numpy(depth_image(depth.astype(np.float32), image_size)).permute(2, 0, 1)[None].float() / 255
        world = torch.from_numpy(unproject_depth(depth, intrinsic, pose)).float()[None]
        split = "eval" if (view // block) % 4 == 3 else "train"
        for copy in range(boxes_per_view):
            boxes = _random_boxes(rng)
            scene_id = f"room_view{view:02d}_{copy}"
            table[scene_id] = {str(i): {"box": boxes[i].tolist(), "label": "box"} for i in range(NUM_BOXES)}
            for kind, (text, rule) in EXPRESSIONS.items():
                target = int(rule(boxes).argmin())
                splits[split].append({"id": f"{scene_id}|{target}|{kind}", "text": text, "target": target,
                                      "pixels": (frames - 0.5) / 0.5, "world": world, "generative": pixels.encode(grey),
                                      "boxes": torch.from_numpy(boxes).float()})
                if split == "eval":
                    annotations.append({"scene_id": scene_id, "object_id": str(target), "ann_id": kind,
                                        "eval_type": "multiple", "description": text})
    return {**splits, "annotations": {"annotations": annotations, "boxes": table}}


def _batch(model, tokenizer, samples):
    from vega3d.models.llava_prompts import IGNORE_INDEX, inference_prompt, training_example

    # Without the long spatial instruction: one token per byte in the tiny tokenizer makes it 150 tokens.
    if model.training:
        pairs = [training_example(tokenizer, [{"from": "human", "value": f"<image>{s['text']}"},
                                              {"from": "gpt", "value": "<ground>"}], spatial_instruction=False) for s in samples]
    else:
        pairs = [(inference_prompt(tokenizer, f"<image>{s['text']}", answer="<ground>", spatial_instruction=False), None)
                 for s in samples]
    longest = max(len(ids) for ids, _ in pairs)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([i + [pad] * (longest - len(i)) for i, _ in pairs])
    labels = None if not model.training else torch.tensor([lab + [IGNORE_INDEX] * (longest - len(lab)) for _, lab in pairs])
    return dict(input_ids=ids, attention_mask=(ids != pad).long(), labels=labels,
                pixel_values_videos=[s["pixels"] for s in samples], world_coords=[s["world"] for s in samples],
                generative_tokens=[s["generative"] for s in samples] if model.generative is not None else None,
                boxes=[s["boxes"] for s in samples], object_labels=[[s["target"]] for s in samples])


def train_and_score(task: dict, generative: bool, steps: int = 600, batch_size: int = 8, learning_rate: float = 1e-2,
                    seed: int = 0, hidden_size: int = 48, num_layers: int = 2) -> dict:
    """Train one tiny model (with or without the generative branch) and score its held-out choices."""
    from vega3d.models.grounding import select_scanrefer
    from vega3d.models.llava_tiny import TINY_LABEL, build_tiny_llava
    from vega3d.models.settings import GenerativeSettings

    settings = GenerativeSettings(backbone="pixels", feature_dim=3, fusion="gated", fusion_options={"preset": "reference"},
                                  adapter_seed=seed) if generative else None
    model, tokenizer = build_tiny_llava(generative=settings, grounding={"seed": seed}, seed=seed, hidden_size=hidden_size,
                                        num_layers=num_layers, image_size=task["train"][0]["pixels"].shape[-1])
    model.model.vision_tower.requires_grad_(False)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate, weight_decay=0.0)
    order = np.random.default_rng(seed)
    losses = []
    model.train()
    for _ in range(steps):
        picked = order.choice(len(task["train"]), size=batch_size, replace=False)
        loss = model(**_batch(model, tokenizer, [task["train"][i] for i in picked])).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    model.eval()
    predictions = []
    with torch.no_grad():
        for start in range(0, len(task["eval"]), batch_size):
            samples = task["eval"][start:start + batch_size]
            batch = _batch(model, tokenizer, samples)
            batch.pop("labels"), batch.pop("object_labels")
            for sample, scores in zip(samples, model(**batch).grounding_scores):
                chosen = select_scanrefer(scores)
                predictions.append({"id": sample["id"], "box": sample["boxes"][chosen].tolist()})
    metrics = score("scanrefer", predictions, task["annotations"])
    tail = max(1, steps // 10)
    return {"model": TINY_LABEL, "first_loss": float(np.mean(losses[:tail])), "last_loss": float(np.mean(losses[-tail:])),
            "Acc@0.25": metrics["Acc@0.25"], "Acc@0.5": metrics["Acc@0.5"], "eval_samples": metrics["num_samples"]}


def run_toy_grounding(steps: int = 600, seed: int = 0, **task_options) -> dict:
    task = build_toy_grounding(seed=seed, **task_options)
    result = {"train_samples": len(task["train"]), "eval_samples": len(task["eval"]), "chance_Acc@0.25": 100.0 / NUM_BOXES}
    for name, generative in (("generative_branch", True), ("no_generative_branch", False)):
        result[name] = train_and_score(task, generative, steps=steps, seed=seed)
    return result
