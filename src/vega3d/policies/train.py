"""``vega3d train-policy CONFIG``: OFT fine-tuning (REFERENCE-VLA Sec. 2.4, F4.4-F4.7) through the HF Trainer.

::

    model:
      base: checkpoints/openvla-7b        # an openvla-7b-layout folder, or `tiny: {}` for a random test policy
      policy: {num_images: 2, num_actions_chunk: 8, action_dim: 7, generative_history: 1}
      generative: {backbone: wan2.1-t2v-1.3b, feature_dim: 1536, fusion: gated}   # omit: plain OFT
      lora: {rank: 32}                    # null: train every parameter (tiny models)
    data:
      demos: [datasets/libero_spatial/*.hdf5]   # LIBERO HDF5 files (globs relative to this file)
      dataset_key: libero_spatial_no_noops      # key of the statistics in dataset_statistics.json
      image_aug: true                           # OFT's crop + colour jitter (evaluate with centre crop)
      generative_source: online                 # online (cache-or-encode) | offline (feature store only)
      store: features/                          # feature store folder (optional online, required offline)
    training:                                   # our keys, then any transformers.TrainingArguments key
      lr_milestone: 100000                      # MultiStepLR step (x 0.1), OFT's schedule
      output_dir: runs/policy
      max_steps: 150005
      per_device_train_batch_size: 8
      learning_rate: 5.0e-4
      bf16: true
      deepspeed: ds_zero2.json                  # DeepSpeed / FSDP / torchrun come from TrainingArguments

Generative features: the frozen backbone encodes each demonstration's frames once (cached in memory and, with
``data.store``, in the feature store, one entry per demo and camera); ``offline`` reads only the store.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance
from transformers import Trainer, TrainingArguments

from vega3d.models.clips import Clip
from vega3d.models.generative import GenerativeSource
from vega3d.models.settings import GenerativeSettings
from vega3d.policies.checkpoint import build_policy, from_pretrained
from vega3d.policies.config import PolicySettings
from vega3d.policies.demos import Demo, demo_statistics, read_demos
from vega3d.policies.lora import LORA_FOLDER, add_lora, base_policy, save_policy
from vega3d.policies.normalization import Normalizer
from vega3d.policies.observations import CROP_AREA, process_image
from vega3d.policies.stream import GenerativeStream, frames_tensor
from vega3d.training.config import read_mapping

TRAINING_DEFAULTS = {
    "output_dir": "runs/policy", "max_steps": 150005, "per_device_train_batch_size": 8, "learning_rate": 5e-4,
    "weight_decay": 0.01, "logging_steps": 10, "save_strategy": "steps", "save_steps": 10000, "save_total_limit": 2,
    "report_to": "none", "seed": 7, "remove_unused_columns": False, "dataloader_num_workers": 0,
}


@dataclass
class PolicyTrainConfig:
    base: str | None
    demos: list[Path]
    tiny: dict | None = None
    policy: PolicySettings = field(default_factory=PolicySettings)
    generative: GenerativeSettings | None = None
    lora: dict | None = field(default_factory=lambda: {"rank": 32})
    dataset_key: str = "demos"
    image_aug: bool = True
    generative_source: str = "online"
    store: Path | None = None
    lr_milestone: int = 100000
    training_arguments: dict[str, Any] = field(default_factory=dict)


def parse_policy_config(values: dict, source: str = "config", base: Path | None = None) -> PolicyTrainConfig:
    if not isinstance(values, dict) or sorted(set(values) - {"model", "data", "training"}):
        raise ValueError(f"{source}: expected the sections model, data, training")
    model, data = dict(values.get("model") or {}), dict(values.get("data") or {})
    if ("base" in model) == ("tiny" in model):
        raise ValueError(f"{source}: model needs exactly one of 'base' (a checkpoint folder) or 'tiny' (a random test policy)")
    unknown = sorted(set(model) - {"base", "tiny", "policy", "generative", "lora"}) + sorted(set(data) - {"demos", "dataset_key", "image_aug", "generative_source", "store"})
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}")
    patterns = data.get("demos")
    if not patterns:
        raise ValueError(f"{source}: data.demos (LIBERO HDF5 files or globs) is required")
    root = base or Path(".")
    demos = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        found = sorted(glob.glob(full))
        if not found:
            raise FileNotFoundError(f"{source}: data.demos {pattern!r} matches no file")
        demos += [Path(p) for p in found]
    training = {**TRAINING_DEFAULTS, **dict(values.get("training") or {})}
    milestone = int(training.pop("lr_milestone", 100000))
    base_path = model.get("base")
    if base_path is not None and not Path(base_path).is_absolute() and (root / base_path).exists():
        base_path = str(root / base_path)
    return PolicyTrainConfig(
        base=base_path, tiny=model.get("tiny"), demos=demos,
        policy=PolicySettings.from_dict(model.get("policy") or {}, f"{source} model.policy"),
        generative=GenerativeSettings.from_dict(model["generative"], f"{source} model.generative") if model.get("generative") else None,
        lora=model.get("lora", {"rank": 32}), dataset_key=str(data.get("dataset_key", "demos")),
        image_aug=bool(data.get("image_aug", True)), lr_milestone=milestone, training_arguments=training,
        generative_source=str(data.get("generative_source", "online")),
        store=None if data.get("store") is None else (Path(data["store"]) if Path(data["store"]).is_absolute() else root / data["store"]),
    )


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """OFT's training augmentation (F2.12): a random 90 %-area square crop resized back, then brightness 0.2,
    contrast and saturation [0.8, 1.2] (PIL; the hue jitter of 0.05 is not applied)."""
    size = image.shape[0]
    side = np.sqrt(CROP_AREA) * size
    x, y = rng.uniform(0, size - side, 2)
    picture = Image.fromarray(image).resize((size, size), Image.BILINEAR, box=(x, y, x + side, y + side))
    picture = ImageEnhance.Brightness(picture).enhance(1 + rng.uniform(-0.2, 0.2))
    picture = ImageEnhance.Contrast(picture).enhance(rng.uniform(0.8, 1.2))
    picture = ImageEnhance.Color(picture).enhance(rng.uniform(0.8, 1.2))
    return np.asarray(picture)


class DemoDataset(torch.utils.data.Dataset):
    """One sample per (demo, t) with t <= T - K: processed images, normalised proprio and action chunk."""

    def __init__(self, demos: list[Demo], normalizer: Normalizer, policy: PolicySettings, image_size: int,
                 stream: GenerativeStream | GenerativeSource | None = None, image_aug: bool = True, seed: int = 0):
        self.demos, self.normalizer, self.policy, self.size = demos, normalizer, policy, image_size
        self.stream, self.image_aug, self.seed = stream, image_aug, seed
        self.index = [(d, t) for d, demo in enumerate(demos) for t in range(len(demo.actions) - policy.num_actions_chunk + 1)]
        if not self.index:
            raise ValueError(f"no demonstration is longer than the action chunk ({policy.num_actions_chunk} steps)")
        self._tokens: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _eval_view(self, demo: Demo, camera: int, t: int) -> np.ndarray:
        """The generative stream's image as the evaluation loop shows it (centre crop when training augments)."""
        frames = demo.generative_images if demo.generative_images is not None else demo.images
        return process_image(frames[camera][t], self.size, center_crop=self.image_aug)

    def generative_tokens(self, d: int, t: int) -> torch.Tensor:
        """``[I, T, h, w, C]`` for step t: the backbone runs once per demo (all its frames) and is cached;
        a :class:`GenerativeSource` also reads or writes the feature store (one entry per demo and camera)."""
        if d not in self._tokens:
            demo, per_camera = self.demos[d], []
            for camera in range(self.policy.generative_image_count):
                views = [self._eval_view(demo, camera, s) for s in range(len(demo.actions))]
                if isinstance(self.stream, GenerativeSource):
                    scene_id = re.sub(r"[^A-Za-z0-9_-]+", "-", f"{demo.source}-camera{camera}")  # the store splits names at "."
                    clip = Clip(scene_id, frames_tensor(views), list(range(len(views))), [str(s) for s in range(len(views))])
                    per_camera.append(self.stream.tokens(clip))
                else:
                    per_camera.append(self.stream.encode(views))
            self._tokens[d] = torch.stack(per_camera)
        steps = [max(s, 0) for s in range(t - self.policy.generative_history + 1, t + 1)]
        return self._tokens[d][:, steps]

    def __getitem__(self, i: int) -> dict:
        d, t = self.index[i]
        demo, k = self.demos[d], self.policy.num_actions_chunk
        rng = np.random.default_rng([self.seed, i])
        images = []
        for camera in range(self.policy.num_images):
            image = process_image(demo.images[camera][t], self.size, center_crop=False)
            images.append(augment(image, rng) if self.image_aug else image)
        sample = {"language": demo.language, "images": images,
                  "actions": torch.from_numpy(self.normalizer.normalize_actions(demo.training_actions[t:t + k])),
                  "proprio": torch.from_numpy(self.normalizer.normalize_proprio(demo.proprio[t]))}
        if self.stream is not None:
            sample["generative_tokens"] = self.generative_tokens(d, t)
        return sample


class Collator:
    def __init__(self, inputs):
        self.inputs = inputs

    def __call__(self, samples: list[dict]) -> dict:
        batch = self.inputs([s["language"] for s in samples], [s["images"] for s in samples])
        for key in ("actions", "proprio", "generative_tokens"):
            if key in samples[0]:
                batch[key] = torch.stack([s[key] for s in samples])
        return batch


class PolicyTrainer(Trainer):
    """AdamW + MultiStepLR (OFT), checkpoints in the policy layout (merged weights, LoRA, heads, statistics)."""

    def __init__(self, *args, inputs, statistics: dict, lr_milestone: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.policy_inputs, self.statistics, self.lr_milestone = inputs, statistics, lr_milestone

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            trainable = [p for p in (model or self.model).parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(trainable, lr=self.args.learning_rate, weight_decay=self.args.weight_decay)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer or self.optimizer, [self.lr_milestone], 0.1)
        return self.lr_scheduler

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        save_policy(self.accelerator.unwrap_model(self.model), output_dir or self.args.output_dir,
                    self.policy_inputs, self.statistics)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_trainable(model or self.model, Path(resume_from_checkpoint))


def load_trainable(model, folder: Path) -> None:
    """Resume: the LoRA weights (``lora_adapter/``) and the fully trained modules of a saved checkpoint."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    policy = base_policy(model)
    if policy is not model:
        set_peft_model_state_dict(model, load_file(folder / LORA_FOLDER / "adapter_model.safetensors"))
    saved = from_pretrained(folder)
    for name in policy.trainable_modules():
        getattr(policy, name).load_state_dict(getattr(saved, name).state_dict())
    if policy is model:  # no LoRA: every parameter was trained
        policy.load_state_dict(saved.state_dict())


def build_model(config: PolicyTrainConfig):
    if config.tiny is not None:
        from vega3d.policies.tiny import tiny_config, tiny_inputs

        model = build_policy(tiny_config(**config.tiny), config.policy, config.generative,
                             seed=int(config.training_arguments.get("seed", 0)))
        return model, tiny_inputs(model.config, model.num_action_tokens)
    from transformers import AutoTokenizer

    from vega3d.policies.inputs import PolicyInputs, PrismaticImageProcessor

    model = from_pretrained(config.base, config.policy, config.generative)
    inputs = PolicyInputs(AutoTokenizer.from_pretrained(config.base), PrismaticImageProcessor.from_pretrained(config.base),
                          model.num_action_tokens)
    return model, inputs


def train_policy(config: PolicyTrainConfig, demos: list[Demo] | None = None) -> Path:
    """Train and write the final policy to ``output_dir``; resumes from its last ``checkpoint-*``."""
    from transformers.trainer_utils import get_last_checkpoint

    model, inputs = build_model(config)
    model.train()
    demos = demos if demos is not None else [d for path in config.demos for d in read_demos(path, model.policy.num_images)]
    statistics = demo_statistics(demos)
    stream = None
    if config.generative is not None:  # cache-or-encode (online) or stored features only (offline)
        stream = GenerativeSource(config.generative, config.generative_source, config.store)
    args = TrainingArguments(**config.training_arguments)
    dataset = DemoDataset(demos, Normalizer(statistics, config.dataset_key), model.policy, inputs.image_processor.size,
                          stream, config.image_aug, args.seed)
    trainable = add_lora(model, **config.lora) if config.lora else model
    trainer = PolicyTrainer(model=trainable, args=args, train_dataset=dataset, data_collator=Collator(inputs),
                            inputs=inputs, statistics={config.dataset_key: statistics}, lr_milestone=config.lr_milestone)
    output = Path(args.output_dir)
    last = get_last_checkpoint(str(output)) if output.is_dir() else None
    result = trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(output))
    trainer.save_state()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    from vega3d.io import write_json

    write_json(output / "train_summary.json", {"steps": trainer.state.global_step, "train_loss": result.training_loss,
                                               "losses": losses, "initial_weights": "tiny, RANDOM" if config.tiny is not None else config.base})
    return output


def read_policy_config(path: str | Path) -> PolicyTrainConfig:
    path = Path(path)
    return parse_policy_config(read_mapping(path), str(path), path.parent)
