"""The generative-branch settings a checkpoint records in its ``config.json`` (key ``vega3d``).

The frozen generative backbone is *referenced* (registry name, weights path or hub id, options), never
copied into the checkpoint; only the small trained adapters (projector, fusion) are saved with the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

CONFIG_KEY = "vega3d"
PROJECTORS = ("mlp", "merger", "avg")  # built by vega3d.models.merger.build_projector
RESAMPLE_MODES = ("area", "bilinear")  # vega3d.models.branch.resample_tokens
VISUAL_INPUTS = ("video", "images")


class MissingGenerativeSettings(ValueError):
    """A checkpoint's config has no ``vega3d`` section: it is a plain Qwen2.5-VL, not a VEGA-3D model."""


@dataclass
class GenerativeSettings:
    """Which frozen backbone feeds the generative branch and how its tokens are fused.

    ``feature_dim`` is the backbone's token width C (input of the generative projector).
    ``adapter_seed`` makes the freshly built projector and fusion reproducible.
    ``projector``: ``mlp`` (paper) or the released ``merger`` / ``avg`` (see :mod:`vega3d.models.merger`);
    ``resample``: how backbone tokens reach the host's grid, ``area`` pooling (paper) or ``bilinear``
    (released); ``visual_input``: which host tokens carry the branch, ``video`` (paper: the clip as one
    video) or ``images`` (released: every frame an independent image).
    """

    backbone: str
    feature_dim: int
    backbone_weights: str | None = None
    backbone_options: dict[str, Any] = field(default_factory=dict)
    fusion: str = "gated"
    fusion_options: dict[str, Any] = field(default_factory=dict)
    adapter_seed: int = 0
    projector: str = "mlp"
    projector_options: dict[str, Any] = field(default_factory=dict)
    resample: str = "area"
    visual_input: str = "video"

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ValueError(f"generative settings: 'backbone' must be a registry name; got {self.backbone!r}")
        if int(self.feature_dim) < 1:
            raise ValueError(f"generative settings: 'feature_dim' must be >= 1; got {self.feature_dim!r}")
        self.feature_dim = int(self.feature_dim)
        for name, allowed in (("projector", PROJECTORS), ("resample", RESAMPLE_MODES),
                              ("visual_input", VISUAL_INPUTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"generative settings: {name!r} must be one of {allowed}; got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved(self, folder) -> "GenerativeSettings":
        """A relative ``dit_weights`` backbone option is a file of the checkpoint folder ``folder``."""
        from pathlib import Path

        dit = self.backbone_options.get("dit_weights")
        if not isinstance(dit, str) or Path(dit).is_absolute() or not (Path(folder) / dit).exists():
            return self
        return replace(self, backbone_options={**self.backbone_options, "dit_weights": str((Path(folder) / dit).resolve())})

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "generative settings") -> "GenerativeSettings":
        if not isinstance(values, dict):
            raise ValueError(f"{source}: expected a mapping, got {type(values).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}")
        missing = sorted(k for k in ("backbone", "feature_dim") if k not in values)
        if missing:
            raise ValueError(f"{source}: missing required key(s) {missing}")
        return cls(**values)

    @classmethod
    def from_config(cls, config: Any, source: str = "model config") -> "GenerativeSettings":
        values = getattr(config, CONFIG_KEY, None)
        if values is None:
            raise MissingGenerativeSettings(
                f"{source} has no '{CONFIG_KEY}' section (generative backbone, fusion): it is a plain "
                "Qwen2.5-VL checkpoint. Load it with Vega3DQwen2_5_VLForConditionalGeneration.from_qwen("
                "path, generative=GenerativeSettings(...)) to attach a new generative branch."
            )
        return cls.from_dict(values, source=f"{source} '{CONFIG_KEY}'")
