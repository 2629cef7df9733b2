"""The generative branch, written once for every host model (paper Sec. 4.3, Eq. 6-8; Alg. 1 lines 12-18).

A host model (Qwen2.5-VL, Qwen3-VL, LLaVA-Video, the OpenVLA-OFT policy) hands over its semantic tokens
as one token grid per group of frames, ``[G, N, D]`` with ``N = H * W``, and the frozen backbone's
per-frame tokens ``[T, h, w, C]``. The branch

1. resamples the backbone tokens to the host's grid (:func:`resample_tokens`: frames of one group are
   averaged, then the ``h x w`` grid is pooled (``area``) or interpolated (``bilinear``) to ``H x W``),
2. projects them to the host's width ``D`` (``generative_projector``, :func:`vega3d.models.merger.build_projector`):
   ``mlp`` (the paper's Linear-GELU-Linear on the merged grid) or, as the released spatial-reasoning
   code, ``merger`` / ``avg`` on the host's *unmerged* patch grid, merging 2x2 windows in the host's order,
3. fuses them token by token with the semantic tokens (``fusion``, any :func:`vega3d.fusion.build_fusion`
   name), one ``[N, D]`` grid per group so grid-aware fusions (cross-attention) see their grid.

:class:`GenerativeBranch` is a mixin for the host's ``nn.Module`` that owns the adapters: they stay
attributes of the host (``<host>.generative_projector``, ``<host>.fusion``), so checkpoints keep the key
names they have always had. Each host file only says where its visual tokens are and what its grid is.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from vega3d.fusion import build_fusion
from vega3d.models.merger import build_projector
from vega3d.models.settings import RESAMPLE_MODES, GenerativeSettings

#: The trained modules of the branch, as attributes of the host module (and checkpoint key prefixes).
ADAPTERS = ("generative_projector", "fusion")


def resample_tokens(tokens: torch.Tensor, grid: tuple[int, int], frames_per_group: int = 1, mode: str = "area") -> torch.Tensor:
    """Per-frame tokens ``[T, h, w, C]`` -> ``[G, H, W, C]`` on the host's grid ``(H, W)``.

    Frames ``g*k .. g*k + k - 1`` form group ``g`` (``k = frames_per_group``, Qwen's temporal patch); a last
    partial group is padded by repeating the last frame, as Qwen's video processor pads an odd clip, so it
    is the mean of the frames it has. ``area`` is adaptive average pooling (the paper's pooling to the
    semantic grid), ``bilinear`` is ``F.interpolate(..., align_corners=False)`` (the released
    spatial-reasoning code, which resizes to Qwen's unmerged patch grid).
    """
    if tokens.ndim != 4:
        raise ValueError(f"generative tokens must be [T, h, w, C]; got shape {tuple(tokens.shape)}")
    if mode not in RESAMPLE_MODES:
        raise ValueError(f"resample mode must be one of {RESAMPLE_MODES}; got {mode!r}")
    groups = -(-tokens.shape[0] // frames_per_group)
    pad = groups * frames_per_group - tokens.shape[0]
    if pad:
        tokens = torch.cat([tokens, tokens[-1:].expand(pad, *tokens.shape[1:])])
    grouped = tokens.reshape(groups, frames_per_group, *tokens.shape[1:]).mean(dim=1).permute(0, 3, 1, 2)
    if mode == "area":
        pooled = F.adaptive_avg_pool2d(grouped, tuple(grid))
    else:
        pooled = F.interpolate(grouped.float(), size=tuple(grid), mode="bilinear", align_corners=False).to(grouped.dtype)
    return pooled.permute(0, 2, 3, 1)


def resample_to_patch_grid(tokens: torch.Tensor, grid_thw, merge_size: int = 2, temporal_patch_size: int = 2,
                           merged: bool = True, mode: str = "area") -> torch.Tensor:
    """Qwen's layout: ``[T, h, w, C]`` -> ``[t, H/m, W/m, C]`` (``merged``) or ``[t, H, W, C]`` (unmerged).

    ``grid_thw`` is Qwen's patch grid of a video or image (t temporal groups, H x W patches); each group
    holds ``temporal_patch_size`` frames (1 for a frame given as an image).
    """
    if tokens.ndim != 4:
        raise ValueError(f"generative tokens must be [T, h, w, C]; got shape {tuple(tokens.shape)}")
    t, grid_h, grid_w = (int(x) for x in grid_thw)
    if -(-tokens.shape[0] // temporal_patch_size) != t:
        raise ValueError(
            f"frame counts differ between streams: the generative stream has {tokens.shape[0]} frame(s) but the "
            f"video has {t} temporal group(s) of {temporal_patch_size} frames "
            f"({t * temporal_patch_size - temporal_patch_size + 1}-{t * temporal_patch_size} frames)"
        )
    grid = (grid_h // merge_size, grid_w // merge_size) if merged else (grid_h, grid_w)
    return resample_tokens(tokens, grid, temporal_patch_size, mode)


def resample_to_merged_grid(tokens: torch.Tensor, grid_thw, merge_size: int = 2, temporal_patch_size: int = 2) -> torch.Tensor:
    """Qwen's video layout: ``[T, h, w, C]`` -> ``[t * (H/m) * (W/m), C]`` in Qwen's merged-token order."""
    return resample_to_patch_grid(tokens, grid_thw, merge_size, temporal_patch_size).reshape(-1, tokens.shape[-1])


def restore_own_init(module: nn.Module, owner: nn.Module | None, build_fresh) -> bool:
    """If ``module`` is part of ``owner``, copy its parameters from the same place in ``build_fresh()`` (a newly
    built, seeded ``owner``; real tensors even in a meta-device load) and return True; else False."""
    prefix = next((key for key, child in (owner.named_modules() if owner is not None else []) if child is module), None)
    if prefix is None:
        return False
    fresh = build_fresh().get_submodule(prefix)
    with torch.no_grad():
        for target, source in zip(module.parameters(recurse=False), fresh.parameters(recurse=False)):
            target.copy_(source)
    return True


class GenerativeBranch:
    """Mixin for a host ``nn.Module``: builds, initialises and applies the generative adapters.

    The host calls :meth:`init_generative_branch` in ``__init__`` and :meth:`init_adapter_weights` from its
    ``_init_weights``; then :meth:`fuse_generative` wherever its visual tokens are ready.
    """

    generative: GenerativeSettings
    generative_projector: nn.Module
    fusion: nn.Module

    def init_generative_branch(self, settings: GenerativeSettings, width: int) -> None:
        self.generative, self.generative_width = settings, width
        for name in ADAPTERS:
            setattr(self, name, self.build_adapter(name))

    def build_adapter(self, name: str, device: str | None = None) -> nn.Module:
        """A freshly initialised adapter, seeded: used for new models and for checkpoints without adapters."""
        with torch.random.fork_rng(devices=[]), torch.device(device) if device else contextlib.nullcontext():
            torch.manual_seed(self.generative.adapter_seed + ADAPTERS.index(name))
            if name == "generative_projector":
                s = self.generative
                return build_projector(s.projector, s.feature_dim, self.generative_width, **s.projector_options)
            return build_fusion(self.generative.fusion, self.generative_width, **self.generative.fusion_options)

    def init_adapter_weights(self, module: nn.Module) -> bool:
        """Re-create ``module``'s own seeded initialisation if it belongs to an adapter; False otherwise.

        Adapters keep their module-defined initialisation rather than the host's normal(0.02): a residual
        gate's scale or a gate bias would otherwise be lost when missing weights are materialised.
        """
        for name in ADAPTERS:
            if restore_own_init(module, getattr(self, name, None), lambda: self.build_adapter(name, device="cpu")):
                return True
        return False

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for name in ADAPTERS for p in getattr(self, name).parameters()]

    @property
    def merges_windows(self) -> bool:
        """True when the projector merges 2x2 windows itself (``merger``/``avg``): it takes the unmerged grid."""
        return self.generative.projector != "mlp"

    def host_grid_tokens(self, tokens: torch.Tensor, grid_thw, merge_size: int, temporal_patch_size: int) -> torch.Tensor:
        """Backbone tokens ``[T, h, w, C]`` -> ``[t, H', W', C]`` on the grid this branch's projector takes:
        the merged grid (``mlp``) or the unmerged patch grid (``merger``/``avg``)."""
        return resample_to_patch_grid(tokens, grid_thw, merge_size, temporal_patch_size,
                                      merged=not self.merges_windows, mode=self.generative.resample)

    def fuse_generative(self, sem: torch.Tensor, gen: torch.Tensor, return_gate: bool = False,
                        context: torch.Tensor | None = None):
        """Fuse semantic token grids ``[G, N, D]`` with resampled generative tokens ``[G, H', W', C]``
        (``H' W' = N``; a merging projector takes ``[G, 2H, 2W, C]``, see :meth:`host_grid_tokens`).

        ``context`` is the instruction context vector (``[D]`` for all groups, or ``[G, D]``) of a fusion that
        reads one (``fusion.takes_context``; see :func:`vega3d.fusion.build_instruction_context`).

        Returns the fused ``[G, N, D]`` in the semantic tokens' dtype (and the gate ``[G, N, ...]`` or None).
        """
        if gen.shape[-1] != self.generative.feature_dim:
            raise ValueError(
                f"generative tokens have {gen.shape[-1]} channels; this model's generative branch expects "
                f"{self.generative.feature_dim} (backbone {self.generative.backbone!r})"
            )
        if not self.merges_windows:
            gen = gen.reshape(sem.shape[0], -1, gen.shape[-1])
        elif gen.ndim != 4 or gen.shape[0] != sem.shape[0]:
            raise ValueError(f"projector {self.generative.projector!r} takes [G, H, W, C] token grids; got {tuple(gen.shape)}")
        projector_dtype = next(self.generative_projector.parameters()).dtype
        gen = self.generative_projector(gen.to(sem.device, projector_dtype))
        if gen.shape[1] != sem.shape[1]:
            raise ValueError(f"generative grid has {gen.shape[1]} tokens per group; the semantic grid has {sem.shape[1]}")
        fused, gate = self.fusion(sem.to(gen.dtype), gen, context=context, return_gate=True)
        fused = fused.to(sem.dtype)
        return (fused, gate) if return_gate else fused
