"""Backbone registry: one name, one small class, the same call for every backbone.

A backbone is a frozen ``torch.nn.Module`` called on frames ``[T, 3, H, W]`` (float, range [0, 1])
that returns tokens ``[T, h, w, C]``. ``load_backbone(name, weights=None, **options)`` builds one.
"""

from __future__ import annotations

import inspect

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch


#: How a random-weight model is labelled wherever it is shown, and the file that marks a weights folder as one
#: (written by the tiny-model and random-Wan builders; read by every loader).
RANDOM_WEIGHTS_LABEL = "RANDOM WEIGHTS (untrained, for tests)"
RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS.txt"


def is_random_weights(folder) -> bool:
    return folder is not None and (Path(folder) / RANDOM_WEIGHTS_MARKER).is_file()


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def parse_grid(grid) -> tuple[int, int]:
    """The ``grid`` option of every backbone: ``N`` or ``(h, w)`` output tokens."""
    h, w = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if h < 1 or w < 1:
        raise ValueError(f"grid must be positive; got {grid}")
    return int(h), int(w)


def parse_dtype(dtype) -> torch.dtype:
    """The ``dtype`` option of every backbone: a ``torch.dtype`` or one of its names (``"bf16"``, ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be a torch dtype name such as 'float32' or 'bfloat16' ({', '.join(_DTYPES)}); got {dtype!r}")
    return _DTYPES[dtype]


class BackboneUnavailable(RuntimeError):
    """The backbone is registered but cannot be built here (no maintained package, missing extra)."""


class Backbone(torch.nn.Module):
    """Base class: subclasses implement ``encode(frames)``; ``forward`` checks the input contract."""

    name: str = "backbone"
    #: True for backbones whose output is a function of learned weights (so a random model must be labelled).
    has_weights: bool = False
    #: Options that ``set_options`` may change on a loaded model (sweeps reuse one model, no reload).
    sweep_options: tuple[str, ...] = ()
    #: True for backbones conditioned on the cameras of the frames (``forward(..., cameras=)`` required).
    needs_cameras: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.weights_label = "weight-free"

    def forward(self, frames: torch.Tensor, scene_id: str | None = None, cameras=None) -> torch.Tensor:
        """``cameras`` (a ``vega3d.scenes.Cameras``: poses + intrinsics of the frames) reach ``encode`` only
        for backbones with ``needs_cameras``; the others ignore them."""
        check_frames(frames)
        if self.needs_cameras:
            if cameras is None:
                raise ValueError(f"backbone {self.name!r} is camera-conditioned: pass cameras= (poses and intrinsics "
                                 "of the frames, as a posed scene's SceneFrames.cameras provides); videos have none")
            if len(cameras) != frames.shape[0]:
                raise ValueError(f"backbone {self.name!r}: {len(cameras)} cameras for {frames.shape[0]} frames")
            tokens = self.encode(frames, scene_id=scene_id, cameras=cameras)
        else:
            tokens = self.encode(frames, scene_id=scene_id)
        if tokens.ndim != 4 or tokens.shape[0] != frames.shape[0]:
            raise RuntimeError(
                f"backbone {self.name!r} returned tokens of shape {tuple(tokens.shape)}; "
                f"expected [T={frames.shape[0]}, h, w, C]"
            )
        return tokens

    def encode(self, frames: torch.Tensor, scene_id: str | None = None) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Everything that determines the features; recorded in store metadata and reports."""
        return {"name": self.name, "weights": self.weights_label}

    def set_options(self, **options: Any) -> "Backbone":
        """Change sweepable options (e.g. ``timestep``, ``block``) in place; others need a new model."""
        unknown = sorted(set(options) - set(self.sweep_options))
        if unknown:
            raise ValueError(
                f"backbone {self.name!r} cannot change {unknown} after loading; sweepable: {list(self.sweep_options)}"
            )
        for key, value in options.items():
            setattr(self, key, value)
        return self

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def train(self, mode: bool = True) -> "Backbone":
        # Backbones are frozen feature extractors: never switch dropout/norm layers to training mode.
        return super().train(False)


def check_frames(frames: torch.Tensor) -> None:
    """Frames must be float ``[T, 3, H, W]`` in [0, 1]; the range is explicit, never guessed."""
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a torch.Tensor [T, 3, H, W]; got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape [T, 3, H, W]; got {tuple(frames.shape)}")
    if frames.shape[0] == 0:
        raise ValueError("frames is empty (T = 0)")
    if not frames.is_floating_point():
        raise TypeError(
            f"frames must be floating point in [0, 1]; got {frames.dtype} (divide uint8 images by 255)"
        )
    lo, hi = float(frames.min()), float(frames.max())
    if not (lo >= 0.0 and hi <= 1.0):
        raise ValueError(
            f"frames must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}] "
            "(uint8 images: divide by 255; [-1, 1] images: map with (x + 1) / 2)"
        )


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    factory: Callable[..., Backbone]
    description: str
    licence: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, description: str = "", licence: str = "") -> Callable:
    """Decorator: ``@register_backbone("pixels")`` on a class or factory ``f(weights=None, **options)``.

    ``licence``: terms of the weights when they restrict use (e.g. non-commercial), shown wherever the
    backbone is listed."""

    def decorator(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        doc = description or (factory.__doc__ or "").strip().splitlines()[0:1]
        _REGISTRY[name] = BackboneSpec(name, factory, doc if isinstance(doc, str) else "".join(doc), licence)
        return factory

    return decorator


def list_backbones() -> list[str]:
    """Names accepted by :func:`load_backbone`, sorted."""
    return sorted(_REGISTRY)


def backbone_description(name: str) -> str:
    return _spec(name).description


def backbone_licence(name: str) -> str:
    """The weights' licence terms when registered with one, else ``""``."""
    return _spec(name).licence


def _spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}") from None


def load_backbone(name: str, weights: str | None = None, **options: Any) -> Backbone:
    """Build the backbone ``name`` (frozen, eval mode) from ``weights`` (folder, hub id or file); an option
    the backbone does not take is a ``ValueError`` raised before anything is loaded."""
    factory = _spec(name).factory
    try:
        inspect.signature(factory).bind(weights=weights, **options)
    except TypeError as error:
        where = f"{factory.__name__}.__init__()" if isinstance(factory, type) else f"{factory.__name__}()"
        raise ValueError(f"backbone {name!r}: {where} {error}") from None
    except ValueError:  # no signature to check (a builtin): the factory checks its own arguments
        pass
    backbone = factory(weights=weights, **options)
    backbone.requires_grad_(False)
    return backbone.eval()
