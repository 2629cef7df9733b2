"""Plumbing shared by the backbones with learned weights: loading, preprocessing, feature capture, pooling.

Weights load through each library's own ``from_pretrained`` from a local folder or a hub id. A folder
holding a file named ``RANDOM_WEIGHTS.txt`` (written by :mod:`vega3d.backbones.tiny`) is a random-weight
model, and every backbone built from it says so in its ``weights_label``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from vega3d.backbones.registry import RANDOM_WEIGHTS_LABEL, Backbone, is_random_weights, parse_dtype, parse_grid

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def from_pretrained(model_class, weights: str, subfolder: str | None = None, dtype: torch.dtype | None = None,
                    device: torch.device | None = None, **kwargs) -> Any:
    """``model_class.from_pretrained`` (in ``dtype``, on ``device``) with an error that names the weights."""
    where = f"{weights}/{subfolder}" if subfolder else weights
    if subfolder:
        kwargs["subfolder"] = subfolder
    if dtype is not None:  # diffusers and transformers name this argument differently
        kwargs["torch_dtype" if model_class.__module__.startswith("diffusers") else "dtype"] = dtype
    from huggingface_hub.errors import HFValidationError

    try:
        model = model_class.from_pretrained(weights, **kwargs)
    except (OSError, HFValidationError) as error:  # missing files, or a path that is not there and no valid hub id
        raise FileNotFoundError(
            f"cannot load {model_class.__name__} weights from {where!r}: {error}. Pass weights= a local folder "
            "in the library's save_pretrained layout, or a hub id (offline: one in the local cache)"
        ) from None
    return model.to(device) if device is not None else model


def component_folder(weights: str, name: str) -> str | None:
    """Sub-folder of a pipeline layout (``vae/``, ``unet/``...), or ``None`` when ``weights`` is the component itself."""
    root = Path(weights)
    if root.is_dir() and not (root / name).is_dir() and (root / "config.json").is_file():
        return None
    return name


def preprocessing_constants(weights: str, filename: str, default_mean, default_std, subfolder: str = "") -> tuple:
    """``image_mean``/``image_std`` from the model's processor config when it has one, else the model's defaults."""
    from transformers.utils import cached_file

    path = cached_file(weights, filename, subfolder=subfolder, _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)
    if path is None:
        return tuple(default_mean), tuple(default_std)
    config = json.loads(Path(path).read_text())
    return tuple(config.get("image_mean", default_mean)), tuple(config.get("image_std", default_std))


class _Captured(Exception):
    def __init__(self, value):
        super().__init__()
        self.value = value


def capture_output(module: torch.nn.Module, run: Callable[[], Any], inputs: bool = False) -> Any:
    """Call ``run()`` and return ``module``'s output (its first input with ``inputs=True``) as soon as it
    exists: the layers after it are never run."""

    def output_hook(_module, _args, output):
        raise _Captured(output)

    def input_hook(_module, args):
        raise _Captured(args[0])

    handle = module.register_forward_pre_hook(input_hook) if inputs else module.register_forward_hook(output_hook)
    try:
        run()
    except _Captured as captured:
        value = captured.value
        return value[0] if isinstance(value, tuple) else value
    finally:
        handle.remove()
    raise RuntimeError(f"{type(module).__name__} was not called by the forward pass")


def check_index(name: str, value: int, count: int, what: str) -> int:
    """A 0-based index into ``count`` blocks; negative values count from the end."""
    if not isinstance(value, int) or not -count <= value < count:
        raise ValueError(f"{name} must be an integer in [{-count}, {count - 1}] ({count} {what}); got {value!r}")
    return value


class PretrainedBackbone(Backbone):
    """A frozen model loaded with ``from_pretrained``; tokens are average-pooled to ``grid``.

    Options shared by all: ``grid`` (output token grid), ``device``, ``dtype`` (model precision; tokens are
    returned as float32 on the frames' device) and ``batch_size`` (frames per forward pass for image models).
    """

    has_weights = True
    default_weights = ""

    def __init__(self, weights=None, grid=(14, 14), device="cpu", dtype="float32", batch_size=8):
        super().__init__()
        self.weights = str(weights) if weights is not None else self.default_weights
        self.weights_label = RANDOM_WEIGHTS_LABEL if is_random_weights(self.weights) else self.weights
        self.grid = grid
        self.device = torch.device(device)
        self.dtype = parse_dtype(dtype)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.batch_size = int(batch_size)

    def set_options(self, **options):
        super().set_options(**options)
        self.check_options()
        return self

    def check_options(self) -> None:
        """Validate and normalise options (called after loading and after every ``set_options``)."""
        self.grid = parse_grid(self.grid)

    def register_constants(self, **constants) -> None:
        """Per-channel constants (mean, std) as ``[1, C, 1, 1]`` buffers on the model's device."""
        for name, values in constants.items():
            self.register_buffer(name, torch.tensor(values, device=self.device).view(1, -1, 1, 1), persistent=False)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[T, h, w, C]`` native tokens -> ``[T, grid_h, grid_w, C]`` float32 (adaptive average pooling)."""
        pooled = F.adaptive_avg_pool2d(tokens.permute(0, 3, 1, 2).float(), self.grid)
        return pooled.permute(0, 2, 3, 1).contiguous()

    def to_model(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.to(self.device, torch.float32)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "weights_path": self.weights, "grid": list(self.grid),
                "dtype": str(self.dtype).removeprefix("torch."), "num_parameters": self.num_parameters}
