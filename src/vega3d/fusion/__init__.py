"""Fusion of semantic and generative tokens (paper Sec. 4.3, Tab. 5).

``build_fusion(name, dim, **options)`` builds one of :data:`FUSIONS`; every module is called as
``fusion(sem, gen)`` on ``[..., N, dim]`` tensors and returns the fused tokens, or ``(fused, gate)``
with ``return_gate=True`` (``gate`` is ``None`` for variants without one).
"""

from __future__ import annotations

import inspect
from typing import Any

from vega3d.fusion.base import Fusion, check_streams
from vega3d.fusion.gated import PRESETS, AdaptiveGatedFusion
from vega3d.fusion.gates import GateRecord, load_gates, overlay_gates, plot_gates, save_gates
from vega3d.fusion.position import grid_position_code, sincos, world_position_code, world_voxel_index
from vega3d.fusion.projector import GenerativeProjector
from vega3d.fusion.variants import (
    AddFusion,
    ChannelConcatFusion,
    ChannelGatedFusion,
    CrossAttentionFusion,
    OnlyGenerativeFusion,
    SequenceConcatFusion,
)

FUSIONS: dict[str, type[Fusion]] = {
    cls.name: cls
    for cls in (AdaptiveGatedFusion, OnlyGenerativeFusion, AddFusion, ChannelConcatFusion,
                SequenceConcatFusion, CrossAttentionFusion, ChannelGatedFusion)
}


def list_fusions() -> list[str]:
    """Names accepted by :func:`build_fusion`, sorted."""
    return sorted(FUSIONS)


def build_fusion(name: str, dim: int, **options: Any) -> Fusion:
    """Build the fusion ``name`` for tokens of width ``dim``; unknown names and options are errors."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; choose from {', '.join(list_fusions())}")
    cls = FUSIONS[name]
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind in named and p.name not in ("self", "dim")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"fusion {name!r} takes no option {', '.join(map(repr, unknown))}; "
                         f"options: {', '.join(accepted) or 'none'}")
    return cls(dim, **options)


__all__ = [
    "FUSIONS", "PRESETS", "AdaptiveGatedFusion", "AddFusion", "ChannelConcatFusion", "ChannelGatedFusion",
    "CrossAttentionFusion", "Fusion", "GateRecord", "GenerativeProjector", "OnlyGenerativeFusion", "SequenceConcatFusion",
    "build_fusion", "check_streams", "grid_position_code", "list_fusions", "load_gates", "overlay_gates",
    "plot_gates", "save_gates", "sincos", "world_position_code", "world_voxel_index",
]
