"""Algorithm 1 through the Hugging Face Trainer: LM cross-entropy on the assistant tokens, parameter
groups with their own learning rates (LLM, vision tower, new modules), warm-up then cosine decay.

Distributed training (DeepSpeed ZeRO, FSDP), mixed precision and gradient checkpointing are
``TrainingArguments`` keys in the config's ``training`` section; nothing here depends on them.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from vega3d.models import QwenInputs, load_model
from vega3d.models.qwen_vega import QwenGenerationShell
from vega3d.models.generative import GenerativeSource
from vega3d.models.branch import ADAPTERS
from vega3d.io import read_json, remove_stale_temporaries, write_json
from vega3d.training.config import TrainConfig
from vega3d.training.data import ConversationDataset, collate, read_records


def parameter_groups(model, lr_llm: float, lr_vision: float, lr_adapters: float, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer groups; a group with learning rate 0 is frozen (``requires_grad=False``) and left out."""
    names = {"vision": [], "adapters": [], "llm": []}
    for name, parameter in model.named_parameters():
        if name.startswith("model.visual."):
            names["vision"].append(parameter)
        elif any(name.startswith(f"model.{adapter}.") for adapter in ADAPTERS):
            names["adapters"].append(parameter)
        else:
            names["llm"].append(parameter)
    groups = []
    for group, lr in (("llm", lr_llm), ("vision", lr_vision), ("adapters", lr_adapters)):
        if lr == 0:
            for parameter in names[group]:
                parameter.requires_grad_(False)
        elif names[group]:
            groups.append({"params": names[group], "lr": lr, "weight_decay": weight_decay, "name": group})
    return groups


class Vega3DTrainer(Trainer):
    """``Trainer`` whose optimizer has one parameter group per part of the model."""

    def __init__(self, *args, learning_rates: dict[str, float], **kwargs):
        self.learning_rates = learning_rates
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            groups = parameter_groups(model or self.model, weight_decay=self.args.weight_decay, **self.learning_rates)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model or self.model)
            optimizer_kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        # The stock loader reads the hub key layout straight into the model (strict=False): every LLM and
        # vision weight was silently left at its initial value. Ours renames and refuses any mismatch.
        load_checkpoint_weights(model or self.model, resume_from_checkpoint)


def load_checkpoint_weights(model, folder: str | Path) -> None:
    """Load ``folder``'s safetensors weights (hub layout, single or sharded) into ``model`` in place, through
    the model's own key renaming; a missing or unexpected key is a ``ValueError`` naming the keys."""
    from safetensors.torch import load_file
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()}) if index.is_file() \
        else [folder / "model.safetensors"]
    if not all(path.is_file() for path in files):
        raise ValueError(f"{folder}: no model.safetensors (or a shard of it is missing); cannot resume from it")
    renamings = [t for t in get_model_conversion_mapping(model, add_legacy=False) if isinstance(t, WeightRenaming)]
    state = {}
    for path in files:
        state.update({rename_source_key(key, renamings, [])[0]: value for key, value in load_file(path).items()})
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state) - tied), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{folder}: checkpoint does not match the model: missing {missing[:4]}"
                         f"{' ...' if len(missing) > 4 else ''} ({len(missing)}), unexpected {unexpected[:4]}"
                         f"{' ...' if len(unexpected) > 4 else ''} ({len(unexpected)})")
    model.load_state_dict(state, strict=False)


def build_trainer(config: TrainConfig) -> Vega3DTrainer:
    if not (Path(config.model) / "config.json").is_file() and (Path(config.model).exists() or config.model.count("/") != 1):
        raise ValueError(f"{config.source}: model {config.model}: not a model folder (no config.json) nor a hub id 'org/name'")
    seed = int(config.training_arguments.get("seed", 0))
    set_seed(seed)
    try:
        args = TrainingArguments(**config.training_arguments, remove_unused_columns=False, label_names=["labels"])
    except TypeError as error:
        raise ValueError(f"{config.source}: training: {error}") from None
    inputs = QwenInputs.from_pretrained(config.model)
    model = load_model(config.model, config.generative)
    generative = None
    if isinstance(model, QwenGenerationShell):  # Qwen2.5-VL or Qwen3-VL with a generative branch
        generative = GenerativeSource(model.generative, config.data.generative_source, config.data.store, device=args.device)
    data = config.data

    def dataset(path):
        return ConversationDataset(read_records(path, data.root), inputs, data.num_frames, data.image_size, generative)

    trainer = Vega3DTrainer(
        model=model, args=args, train_dataset=dataset(data.train),
        eval_dataset=dataset(data.eval) if data.eval else None,
        data_collator=partial(collate, pad_token_id=inputs.tokenizer.pad_token_id),
        learning_rates={"lr_llm": config.lr_llm, "lr_vision": config.lr_vision, "lr_adapters": config.lr_adapters},
    )
    trainer.inputs = inputs
    return trainer


def train(config: TrainConfig) -> Path:
    """Run (or resume) training; the final model, tokenizer and image processor go to ``output_dir``.
    A run that fails before writing anything leaves no empty run folder behind."""
    output = Path(config.training_arguments["output_dir"])
    created = not output.exists()
    try:
        trainer = build_trainer(config)
        last = get_last_checkpoint(str(output)) if output.is_dir() else None
        if last is not None:  # a half-written state would stop the Trainer with a bare JSON error
            read_json(Path(last) / "trainer_state.json", "trainer state (delete this checkpoint folder to resume from the one before)")
        remove_stale_temporaries(output)
        trainer.train(resume_from_checkpoint=last)
    except BaseException:
        if created:
            _remove_empty_folders(output)
        raise
    trainer.save_model(str(output))
    trainer.inputs.save_pretrained(output)
    write_json(output / "train_summary.json",
               {"config": config.source, "log_history": trainer.state.log_history, "resumed_from": last}, sort_keys=True)
    return output


def _remove_empty_folders(folder: Path) -> None:
    """Remove ``folder`` and its sub-folders if they hold no file (never a file, never a non-empty folder)."""
    if not folder.is_dir():
        return
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [folder]:
        try:
            path.rmdir()
        except OSError:  # holds a file: keep it (and therefore its parents)
            continue
