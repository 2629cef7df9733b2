"""LoRA fine-tuning (OFT's LIBERO recipe, REFERENCE-VLA Sec. 2.4) and saving a trained policy.

:func:`add_lora` puts peft LoRA adapters (rank 32, alpha ``min(rank, 16)``, dropout 0, gaussian init) on
every ``nn.Linear`` of the vision backbone, projector and LLM except ``lm_head`` -- peft's "all-linear" --
and trains the heads (and the generative adapters) in full, as OFT trains its action head and proprio
projector. :func:`save_policy` writes the policy folder: the LoRA-merged weights in the openvla-7b layout
(what evaluation loads), ``lora_adapter/`` (peft's files, for the un-merged base), the heads, the
generative adapters, ``dataset_statistics.json``, tokenizer and ``preprocessor_config.json``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vega3d.policies.checkpoint import save_pretrained
from vega3d.policies.modeling import Vega3DOpenVLAForActionPrediction
from vega3d.policies.normalization import save_statistics

LORA_FOLDER = "lora_adapter"


def lora_targets(model: Vega3DOpenVLAForActionPrediction) -> list[str]:
    """Names of the Linear layers LoRA adapts: all but ``lm_head`` and the fully trained modules."""
    skip = ("language_model.lm_head", *model.trainable_modules())
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and not name.startswith(skip)]


def add_lora(model: Vega3DOpenVLAForActionPrediction, rank: int = 32, alpha: int | None = None,
             dropout: float = 0.0, targets: list[str] | None = None):
    """Wrap ``model`` in a peft model; LoRA weights, heads and generative adapters are the trainable parameters."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=min(rank, 16) if alpha is None else alpha, lora_dropout=dropout,
                        target_modules=targets or lora_targets(model), init_lora_weights="gaussian")
    peft_model = get_peft_model(model, config)
    for module in model.trainable_modules().values():
        module.requires_grad_(True)
    return peft_model


def base_policy(model) -> Vega3DOpenVLAForActionPrediction:
    """The policy inside a peft wrapper (or the policy itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def merged_state_dict(peft_model) -> dict[str, torch.Tensor]:
    """The policy's weights with LoRA merged in (``W + s B A``), under the plain policy's key names."""
    from peft.tuners.lora import LoraLayer

    base = base_policy(peft_model)
    state = {}
    with torch.no_grad():
        for name, tensor in base.state_dict().items():
            if ".lora_" not in name:
                state[name.replace(".base_layer.", ".")] = tensor.detach().clone()
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer):
                for adapter in module.active_adapters:
                    state[f"{name}.weight"] += module.get_delta_weight(adapter).to(state[f"{name}.weight"].dtype)
    return state


def save_policy(model, folder: str | Path, inputs=None, statistics: dict | None = None) -> Path:
    """Write a trained (peft-wrapped or plain) policy; ``statistics`` = ``{dataset_key: stats}``."""
    folder = Path(folder)
    base = base_policy(model)
    state = None
    if base is not model:
        model.save_pretrained(folder / LORA_FOLDER)
        state = merged_state_dict(model)
    save_pretrained(base, folder, state)
    if inputs is not None:
        inputs.tokenizer.save_pretrained(folder)
        inputs.image_processor.save_pretrained(folder)
    for key, values in (statistics or {}).items():
        save_statistics(folder, key, values)
    return folder
