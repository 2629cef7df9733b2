"""Fusion of semantic and generative tokens (paper Sec. 4.3, Tab. 5).

``build_fusion(name, dim, **options)`` builds one of :data:`FUSIONS`; every module is called as
``fusion(sem, gen)`` on ``[..., N, dim]`` tensors and returns the fused tokens, or ``(fused, gate)``
with ``return_gate=True`` (``gate`` is ``None`` for variants without one). ``context=`` passes the
instruction context vector (:func:`build_instruction_context`) to the fusions that read it.
``released_fusion(method)`` translates a released ``generative_fusion_method`` name.
"""

from __future__ import annotations

import inspect
from typing import Any

from vega3d.fusion.attention import CrossAttentionFusion
from vega3d.fusion.base import Fusion, check_streams
from vega3d.fusion.gated import PRESETS, AdaptiveGatedFusion, InstructionGatedFusion
from vega3d.fusion.gates import GateRecord, load_gates, overlay_gates, plot_gates, save_gates
from vega3d.fusion.instruction import (
    RELATION_PHRASES,
    TEMPLATE_PHRASES,
    InstructionVocabulary,
    build_instruction_context,
    select_instruction_tokens,
)
from vega3d.fusion.position import grid_position_code, sincos, world_position_code, world_voxel_index
from vega3d.fusion.projector import GenerativeProjector
from vega3d.fusion.variants import (
    AddFusion,
    ChannelConcatFusion,
    ChannelGatedFusion,
    OnlyGenerativeFusion,
    SequenceConcatFusion,
    WeightedFusion,
)

FUSIONS: dict[str, type[Fusion]] = {
    cls.name: cls
    for cls in (AdaptiveGatedFusion, OnlyGenerativeFusion, AddFusion, ChannelConcatFusion,
                SequenceConcatFusion, CrossAttentionFusion, ChannelGatedFusion, WeightedFusion,
                InstructionGatedFusion)
}

#: The released ``generative_fusion_method`` names -> (our name, options). Note the released ``gated`` is
#: the channel gate; the released default ``token_gated`` is our ``gated`` with ``preset="reference"``.
RELEASED_FUSIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "add": ("add", {}),
    "only": ("only_generative", {}),
    "concat": ("channel_concat", {}),
    "gated": ("channel_gated", {}),
    "token_gated": ("gated", {"preset": "reference"}),
    "token_gated_residual": ("gated", {"preset": "residual"}),
    "weighted": ("weighted", {}),
    "cross_attention": ("cross_attention", {}),
    "instruction_token_gated": ("instruction_token_gated", {}),
    "context_gated": ("instruction_token_gated", {}),
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


def released_fusion(method: str, num_layers: int = 1) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` for ``build_fusion`` from a released config's ``generative_fusion_method``
    (and ``generative_fusion_num_layers``, read by ``cross_attention`` only)."""
    if method not in RELEASED_FUSIONS:
        raise ValueError(f"unknown released fusion method {method!r}; known: {', '.join(sorted(RELEASED_FUSIONS))}")
    name, options = RELEASED_FUSIONS[method]
    return name, ({**options, "num_layers": int(num_layers)} if name == "cross_attention" else dict(options))


__all__ = [
    "FUSIONS", "PRESETS", "RELATION_PHRASES", "RELEASED_FUSIONS", "TEMPLATE_PHRASES", "AdaptiveGatedFusion",
    "AddFusion", "ChannelConcatFusion", "ChannelGatedFusion", "CrossAttentionFusion", "Fusion", "GateRecord",
    "GenerativeProjector", "InstructionGatedFusion", "InstructionVocabulary", "OnlyGenerativeFusion",
    "SequenceConcatFusion", "WeightedFusion", "build_fusion", "build_instruction_context", "check_streams",
    "grid_position_code", "list_fusions", "load_gates", "overlay_gates", "plot_gates", "released_fusion",
    "save_gates", "select_instruction_tokens", "sincos", "world_position_code", "world_voxel_index",
]
