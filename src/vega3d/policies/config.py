"""The policy's configuration: the ``openvla/openvla-7b`` ``config.json`` plus the OFT recipe settings.

:class:`OpenVLAConfig` reads and writes the Prismatic/OpenVLA ``config.json`` (``model_type`` "openvla",
REFERENCE-VLA F1.1): the two timm backbone ids, image size, the Llama ``text_config`` (transformers'
``LlamaConfig`` defaults are the 7B geometry) and ``norm_stats``. vega3d adds two optional keys:
``vega3d_policy`` (:class:`PolicySettings`, the OFT constants the original keeps in ``constants.py``) and
``vega3d`` (the generative branch, :class:`vega3d.models.GenerativeSettings`), plus ``timm_model_kwargs``,
overrides handed to ``timm.create_model`` (only tiny test models set them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import LlamaConfig, PretrainedConfig

POLICY_KEY = "vega3d_policy"
TIMM_MODEL_IDS = ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]
GENERATIVE_IMAGES = ("primary", "primary+wrist")


class OpenVLAConfig(PretrainedConfig):
    model_type = "openvla"
    sub_configs = {"text_config": LlamaConfig}

    def __init__(self, vision_backbone_id: str = "dinosiglip-vit-so-224px", llm_backbone_id: str = "llama2-7b-pure",
                 arch_specifier: str = "no-align+fused-gelu-mlp", use_fused_vision_backbone: bool = True,
                 image_resize_strategy: str = "resize-naive", text_config: dict | LlamaConfig | None = None,
                 llm_max_length: int = 2048, pad_token_id: int = 32000, pad_to_multiple_of: int = 64,
                 n_action_bins: int = 256, norm_stats: dict | None = None, timm_model_ids: list[str] | None = None,
                 timm_override_act_layers: list | None = None, image_sizes: list[int] | None = None,
                 hf_llm_id: str = "meta-llama/Llama-2-7b-hf", timm_model_kwargs: list[dict] | None = None,
                 **kwargs: Any):
        self.vision_backbone_id, self.llm_backbone_id, self.arch_specifier = vision_backbone_id, llm_backbone_id, arch_specifier
        self.use_fused_vision_backbone, self.image_resize_strategy = use_fused_vision_backbone, image_resize_strategy
        self.llm_max_length, self.pad_to_multiple_of, self.n_action_bins = llm_max_length, pad_to_multiple_of, n_action_bins
        self.norm_stats, self.hf_llm_id = norm_stats, hf_llm_id
        self.timm_model_ids = list(timm_model_ids or TIMM_MODEL_IDS)
        self.timm_override_act_layers = list(timm_override_act_layers or [None] * len(self.timm_model_ids))
        self.image_sizes = list(image_sizes or [224, 224])
        self.timm_model_kwargs = timm_model_kwargs
        if isinstance(text_config, dict):
            text_config = LlamaConfig(**{"vocab_size": 32064, "pad_token_id": pad_token_id, **text_config})
        self.text_config = text_config or LlamaConfig(vocab_size=32064, pad_token_id=pad_token_id)
        super().__init__(pad_token_id=pad_token_id, **kwargs)


@dataclass
class PolicySettings:
    """The OFT recipe (REFERENCE-VLA F2.1, F2.10, F3.10): LIBERO defaults.

    ``generative_images``: which camera images feed the generative branch ("primary" = third-person only);
    ``generative_history``: frames of the generative clip per step (1 = ``per_frame``; k > 1 = the last k
    frames, averaged into one token grid by :func:`vega3d.models.resample_tokens`).
    """

    num_actions_chunk: int = 8
    action_dim: int = 7
    proprio_dim: int = 8
    num_images: int = 2
    use_proprio: bool = True
    generative_images: str = "primary"
    generative_history: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("num_actions_chunk", "action_dim", "proprio_dim", "num_images", "generative_history"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"policy settings: {key!r} must be >= 1; got {getattr(self, key)!r}")
        if self.generative_images not in GENERATIVE_IMAGES:
            raise ValueError(f"policy settings: generative_images must be one of {GENERATIVE_IMAGES}; got {self.generative_images!r}")
        if self.generative_images == "primary+wrist" and self.num_images < 2:
            raise ValueError("policy settings: generative_images 'primary+wrist' needs num_images >= 2")

    @property
    def generative_image_count(self) -> int:
        return 1 if self.generative_images == "primary" else 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "policy settings") -> "PolicySettings":
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**values)


def read_config(folder: str | Path) -> OpenVLAConfig:
    """``folder/config.json`` of an OpenVLA checkpoint; another layout is an error naming the file."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json (expected an openvla/openvla-7b-layout checkpoint folder)")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if values.get("model_type") != "openvla":
        raise ValueError(f"{path}: model_type is {values.get('model_type')!r}, not 'openvla': this is not an "
                         "openvla/openvla-7b-layout checkpoint")
    return OpenVLAConfig.from_dict(values)
