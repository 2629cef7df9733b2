"""Strict loading and saving of the policy in the ``openvla/openvla-7b`` layout plus OFT's head files.

A folder holds ``config.json`` (:class:`OpenVLAConfig`), ``model.safetensors`` or shards with
``model.safetensors.index.json`` (keys ``vision_backbone.*``, ``projector.*``, ``language_model.*`` and,
for a VEGA-3D policy, ``generative_projector.*`` / ``fusion.*``), ``preprocessor_config.json`` and the heads:
``action_head.safetensors`` / ``proprio_projector.safetensors`` as vega3d writes them, or OFT's
``action_head--{step}_checkpoint.pt`` / ``proprio_projector--{step}_checkpoint.pt`` (DDP state dicts with a
``module.`` prefix, read with ``torch.load(weights_only=True)``). Every file must hold exactly the keys and
shapes the model has: a missing, unexpected or mis-shaped key is an error naming the file.

The model is built on the meta device and the tensors are assigned from the files, so a 7B checkpoint is
read once, without a random initialisation first.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open

from vega3d.io import save_safetensors
from vega3d.models.branch import ADAPTERS
from vega3d.models.settings import CONFIG_KEY, GenerativeSettings
from vega3d.policies.config import POLICY_KEY, OpenVLAConfig, PolicySettings, read_config
from vega3d.policies.modeling import Vega3DOpenVLAForActionPrediction

HEADS = ("action_head", "proprio_projector")
INDEX_FILE = "model.safetensors.index.json"


def build_policy(config: OpenVLAConfig, policy: PolicySettings | None = None, generative: GenerativeSettings | None = None,
                 device: str = "cpu", seed: int = 0) -> Vega3DOpenVLAForActionPrediction:
    """A new policy with seeded random weights (``device="meta"``: shapes only, for counting and loading)."""
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        return Vega3DOpenVLAForActionPrediction(config, policy, generative)


def _settings(config: OpenVLAConfig, policy, generative, folder: Path):
    stored_policy, stored_generative = getattr(config, POLICY_KEY, None), getattr(config, CONFIG_KEY, None)
    source = folder / "config.json"
    if stored_policy is not None:
        stored = PolicySettings.from_dict(stored_policy, f"{source} {POLICY_KEY!r}")
        if policy is not None and policy.to_dict() != stored.to_dict():
            raise ValueError(f"{source}: the checkpoint was trained with {stored.to_dict()}; asked for {policy.to_dict()}")
        policy = stored
    if stored_generative is not None:
        stored = GenerativeSettings.from_dict(stored_generative, f"{source} {CONFIG_KEY!r}")
        if generative is not None and generative.to_dict() != stored.to_dict():
            raise ValueError(f"{source}: the checkpoint has the generative branch {stored.to_dict()}; asked for {generative.to_dict()}")
        generative = stored
    return policy or PolicySettings(), generative, stored_generative is not None


def _shard_files(folder: Path) -> list[Path]:
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: no 'weight_map'")
        files = [folder / name for name in sorted(set(weight_map.values()))]
    elif (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    else:
        raise FileNotFoundError(f"{folder}: no model.safetensors or {INDEX_FILE} (expected the openvla-7b layout)")
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard listed in {INDEX_FILE} is missing")
    return files


def _check(path: Path, tensors: dict, expected: dict, what: str) -> None:
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ValueError(f"{path}: unexpected key(s) for {what}: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(f"{path}: {key} has shape {tuple(tensor.shape)}; the policy expects {tuple(expected[key].shape)} "
                             "(check action_dim / proprio_dim / num_images and the model geometry)")


def _head_file(folder: Path, name: str) -> Path | None:
    candidates = [folder / f"{name}.safetensors"] if (folder / f"{name}.safetensors").is_file() else sorted(folder.glob(f"{name}--*_checkpoint.pt"))
    if len(candidates) > 1:
        raise ValueError(f"{folder}: several {name} files {[p.name for p in candidates]}; keep the one of the step to evaluate")
    return candidates[0] if candidates else None


def _read_head(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {key.removeprefix("module."): value for key, value in state.items()}


def from_pretrained(folder: str | Path, policy: PolicySettings | None = None, generative: GenerativeSettings | None = None,
                    dtype: torch.dtype = torch.float32, heads: str | Path | None = None) -> Vega3DOpenVLAForActionPrediction:
    """Load a policy; ``generative`` attaches a new (seeded) branch to a checkpoint without one.

    ``heads``: the folder of the action head / proprio projector files (default: ``folder``); a checkpoint
    without head files (plain openvla-7b) gets freshly initialised heads, as OFT's fine-tuning starts.
    """
    folder = Path(folder)
    config = read_config(folder)
    policy, generative, stored_branch = _settings(config, policy, generative, folder)
    model = build_policy(config, policy, generative, device="meta")
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    owned_by_shards = [k for k in expected if k.split(".")[0] not in HEADS and (stored_branch or k.split(".")[0] not in ADAPTERS)]
    for path in _shard_files(folder):
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        _check(path, tensors, {k: expected[k] for k in owned_by_shards}, "the OpenVLA model")
        state.update(tensors)
    missing = sorted(set(owned_by_shards) - set(state))
    if missing:
        raise ValueError(f"{folder}: the model weights lack {len(missing)} key(s), e.g. {missing[:5]}")
    for name in HEADS:
        if getattr(model, name) is None:
            continue
        path = _head_file(Path(heads or folder), name)
        wanted = {k.removeprefix(f"{name}."): v for k, v in expected.items() if k.startswith(f"{name}.")}
        if path is None:  # plain openvla-7b: fine-tuning starts from fresh heads
            tensors = model.build_head(name, device="cpu").state_dict()
        else:
            tensors = _read_head(path)
            _check(path, tensors, wanted, name)
            lacking = sorted(set(wanted) - set(tensors))
            if lacking:
                raise ValueError(f"{path}: missing key(s) for {name}: {lacking[:5]}")
        state.update({f"{name}.{k}": v for k, v in tensors.items()})
    if generative is not None and not stored_branch:
        for name in ADAPTERS:  # attached branch: the adapters' own seeded initialisation
            state.update({f"{name}.{k}": v for k, v in model.build_adapter(name, device="cpu").state_dict().items()})
    model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, strict=True, assign=True)
    _materialise_buffers(model)
    return model.eval()


def _materialise_buffers(model: torch.nn.Module) -> None:
    """Non-persistent buffers (Llama's RoPE frequencies) are not in any file: compute them on the real device."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    llm = model.language_model.model
    device = llm.embed_tokens.weight.device
    with torch.device(device):
        llm.rotary_emb = LlamaRotaryEmbedding(model.language_model.config)
    left = [name for name, buffer in model.named_buffers() if buffer.is_meta]
    if left:
        raise RuntimeError(f"buffers left on the meta device after loading: {left[:5]}")


def save_pretrained(model: Vega3DOpenVLAForActionPrediction, folder: str | Path, state: dict | None = None,
                    max_shard_size: str = "5GB") -> Path:
    """Write the policy in the layout :func:`from_pretrained` reads (``state``: weights to write instead of
    the model's own, e.g. LoRA-merged ones). Files are written to a temporary folder and moved in one by one."""
    from huggingface_hub import save_torch_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = dict(state if state is not None else model.state_dict())
    config = OpenVLAConfig.from_dict(model.config.to_dict())
    setattr(config, POLICY_KEY, model.policy.to_dict())
    if model.generative is not None:
        setattr(config, CONFIG_KEY, model.generative.to_dict())
    with tempfile.TemporaryDirectory(dir=folder, prefix=".save-") as tmp:
        tmp = Path(tmp)
        config.to_json_file(tmp / "config.json")
        heads = {name: {k.removeprefix(f"{name}."): state.pop(k) for k in list(state) if k.startswith(f"{name}.")} for name in HEADS}
        save_torch_state_dict(state, tmp, max_shard_size=max_shard_size)
        for name, tensors in heads.items():
            if tensors:
                save_safetensors(tensors, tmp / f"{name}.safetensors")
        for stale in [*folder.glob("model*.safetensors"), folder / INDEX_FILE]:
            if stale.exists():
                stale.unlink()
        for path in tmp.iterdir():
            os.replace(path, folder / path.name)
    return folder
