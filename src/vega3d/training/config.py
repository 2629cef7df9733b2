"""``vega3d train CONFIG``: the run configuration (YAML or JSON), checked before anything is loaded.

::

    model: path/to/Qwen2.5-VL          # plain Qwen2.5-VL (stage-1) or a VEGA-3D checkpoint; a LLaVA-Video
                                       # checkpoint (3D setting) is recognised from its config.json
    generative:                        # needed for a plain Qwen checkpoint; null = no generative branch
      backbone: wan2.1-t2v-1.3b
      backbone_weights: /models/Wan2.1-T2V-1.3B-Diffusers
      feature_dim: 1536
      fusion: gated
      fusion_options: {preset: residual}
    data:
      train: data/train.jsonl          # JSONL conversations (see vega3d.training.data)
      root: data/                      # paths in the JSONL are relative to this (default: its folder)
      num_frames: 32
      image_size: [384, 384]
      generative_source: online        # online (cache-or-encode) | offline (feature store)
      store: features/                 # feature store folder (required for offline)
    training:                          # our keys, then any transformers.TrainingArguments key
      lr_llm: 1.0e-5
      lr_vision: 2.0e-6                # 0 freezes the vision tower
      lr_adapters: 1.0e-4              # generative projector + fusion
      output_dir: runs/vega3d
      per_device_train_batch_size: 1
      warmup_ratio: 0.03               # = warmup_steps: 0.03 (transformers 5 reads a float < 1 as a ratio)
      lr_scheduler_type: cosine
      activation_checkpointing: true          # gradient checkpointing (its transformers 5 name)
      bf16: true
      deepspeed: ds_zero2.json         # DeepSpeed / FSDP come from TrainingArguments, not from our code

The 3D setting (LLaVA-Video): ``data.train`` is the ``multi.yaml`` of ``vega3d prepare mixture`` (or one
processed record file), ``data.scenes`` the folder of scene folders, ``data.boxes`` the GT box JSON (the
grounding proposals), ``data.info`` an optional EmbodiedScan info JSON; ``grounding: {seed: 0}`` attaches a
new grounding head to a checkpoint without one. See docs/training.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vega3d.models.settings import GenerativeSettings

OUR_TRAINING_KEYS = {"lr_llm": 1e-5, "lr_vision": 2e-6, "lr_adapters": 1e-4}
TRAINING_DEFAULTS = {
    "output_dir": "runs/vega3d", "num_train_epochs": 1, "per_device_train_batch_size": 1, "warmup_steps": 0.03,
    "lr_scheduler_type": "cosine", "optim": "adamw_torch", "weight_decay": 0.0, "logging_steps": 10,
    "save_strategy": "steps", "save_steps": 500, "save_total_limit": 2, "report_to": "none", "seed": 0,
}


@dataclass
class DataConfig:
    train: Path
    root: Path | None = None
    eval: Path | None = None
    num_frames: int = 32
    image_size: tuple[int, int] | None = (384, 384)
    generative_source: str = "online"
    store: Path | None = None
    scenes: Path | None = None  # 3D: folder of scene folders (a record's video "scannet/X" is scenes/X)
    boxes: Path | None = None  # 3D: scannet_train_gt_box.json, the grounding proposals
    info: Path | None = None  # 3D: EmbodiedScan info JSON (vega3d prepare scenes)


@dataclass
class TrainConfig:
    model: str
    data: DataConfig
    generative: GenerativeSettings | None = None
    grounding: dict | None = None
    lr_llm: float = OUR_TRAINING_KEYS["lr_llm"]
    lr_vision: float = OUR_TRAINING_KEYS["lr_vision"]
    lr_adapters: float = OUR_TRAINING_KEYS["lr_adapters"]
    training_arguments: dict[str, Any] = field(default_factory=dict)
    source: str = "config"


# (rule, what it means) for the numeric options users get wrong; checked before anything is loaded
LEARNING_RATES = ("lr_llm", "lr_vision", "lr_adapters", "learning_rate")
NUMERIC_RULES = {
    **{key: (lambda v: v >= 0, ">= 0 (0 freezes that part)") for key in LEARNING_RATES},
    "num_train_epochs": (lambda v: v > 0, "> 0"),
    "max_steps": (lambda v: v > 0 or v == -1, "> 0 (or -1: from num_train_epochs)"),
    **{key: (lambda v: v >= 1 and v == int(v), "a positive integer") for key in (
        "per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "num_frames")},
    **{key: (lambda v: 0 < v < 1 or (v >= 1 and v == int(v)), "a whole number of steps >= 1 or a ratio in (0, 1)")
       for key in ("save_steps", "logging_steps", "eval_steps")},
    "warmup_ratio": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "warmup_steps": (lambda v: v >= 0 and (v < 1 or v == int(v)), "a ratio in [0, 1) or a whole number of steps"),
    "weight_decay": (lambda v: v >= 0, ">= 0"),
    "max_grad_norm": (lambda v: v >= 0, ">= 0"),
}


def check_numbers(training: dict, data: dict, source: str) -> None:
    """Numbers are numbers, in range (a negative learning rate climbs the loss; 'one' is not an epoch count)."""
    for section, values in (("training", training), ("data", data)):
        for key, (rule, meaning) in NUMERIC_RULES.items():
            if key not in values or values[key] is None:
                continue
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ValueError(f"{source}: {section}.{key} must be a number {meaning}; got {value!r}")
            if not rule(value):
                raise ValueError(f"{source}: {section}.{key} must be {meaning}; got {value!r}")
    if all(float(training.get(key, OUR_TRAINING_KEYS.get(key, 1))) == 0 for key in OUR_TRAINING_KEYS):
        raise ValueError(f"{source}: every learning rate is 0: nothing would be trained")


def read_mapping(path: str | Path) -> dict:
    """A YAML (``.yaml``/``.yml``) or JSON run configuration file, parsed; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as error:  # yaml and json raise different types; both mean "cannot parse"
        raise ValueError(f"{path}: cannot parse ({error})") from None


def read_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    return parse_config(read_mapping(path), source=str(path), base=path.parent)


def parse_config(values: dict, source: str = "config", base: Path | None = None) -> TrainConfig:
    """Validate the mapping; relative paths are relative to ``base`` (the config file's folder)."""
    if not isinstance(values, dict):
        raise ValueError(f"{source}: expected a mapping at the top level")
    unknown = sorted(set(values) - {"model", "generative", "grounding", "data", "training"})
    if unknown:
        raise ValueError(f"{source}: unknown section(s) {unknown}; expected model, generative, grounding, data, training")
    if values.get("grounding") is not None and not isinstance(values["grounding"], dict):
        raise ValueError(f"{source}: grounding must be a mapping (e.g. {{seed: 0}}) or null")
    for key in ("model", "data"):
        if key not in values:
            raise ValueError(f"{source}: missing {key!r}")

    def resolve(value):
        if value is None:
            return None
        value = Path(value).expanduser()
        return value if value.is_absolute() or base is None else base / value

    data = dict(values["data"])
    known = set(DataConfig.__dataclass_fields__)
    if sorted(set(data) - known):
        raise ValueError(f"{source}: unknown data key(s) {sorted(set(data) - known)}; known: {sorted(known)}")
    if "train" not in data:
        raise ValueError(f"{source}: data.train (a JSONL file) is required")
    for key in ("train", "root", "eval", "store", "scenes", "boxes", "info"):
        data[key] = resolve(data.get(key))
    if data.get("image_size") is not None:
        size = data["image_size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in size)):
            raise ValueError(f"{source}: data.image_size must be two positive integers [H, W]; got {size!r}")
        data["image_size"] = tuple(size)
    if data.get("generative_source", "online") not in ("online", "offline"):
        raise ValueError(f"{source}: data.generative_source must be 'online' or 'offline'")
    if data.get("generative_source") == "offline" and data.get("store") is None:
        raise ValueError(f"{source}: data.generative_source 'offline' needs data.store (the feature store folder)")

    generative = values.get("generative")
    if generative is not None:
        generative = GenerativeSettings.from_dict(generative, source=f"{source} 'generative'")
    training = dict(values.get("training") or {})
    check_numbers(training, data, source)
    ours = {key: float(training.pop(key, default)) for key, default in OUR_TRAINING_KEYS.items()}
    if "warmup_ratio" in training:  # the paper's name; transformers 5 reads a float < 1 in warmup_steps as a ratio
        ratio = float(training.pop("warmup_ratio"))
        if "warmup_steps" in training or not 0 <= ratio < 1:
            raise ValueError(f"{source}: training.warmup_ratio must be in [0, 1) and not combined with warmup_steps")
        training["warmup_steps"] = ratio
    model = str(values["model"])
    model = str(resolve(model)) if (base is not None and (base / model).exists()) else model
    return TrainConfig(model=model, data=DataConfig(**data), generative=generative, grounding=values.get("grounding"), **ours,
                       training_arguments={**TRAINING_DEFAULTS, **training}, source=source)
