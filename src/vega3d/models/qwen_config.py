"""The configuration of the Qwen2.5-VL VEGA-3D family: Qwen2.5-VL's own, under its own ``model_type``.

Checkpoints written before the family had a ``model_type`` say ``qwen2_5_vl`` and carry a ``vega3d``
section; :func:`vega3d_config` reads both.
"""

from __future__ import annotations

from transformers import Qwen2_5_VLConfig

MODEL_TYPE = "vega3d_qwen2_5_vl"


class Vega3DQwen2_5_VLConfig(Qwen2_5_VLConfig):
    model_type = MODEL_TYPE


def vega3d_config(config: Qwen2_5_VLConfig | dict) -> Vega3DQwen2_5_VLConfig:
    """The same settings as a :class:`Vega3DQwen2_5_VLConfig` (from a Qwen2.5-VL config or a config dict)."""
    if isinstance(config, Vega3DQwen2_5_VLConfig):
        return config
    values = config.to_dict() if isinstance(config, Qwen2_5_VLConfig) else dict(config)
    values.pop("model_type", None)
    return Vega3DQwen2_5_VLConfig.from_dict(values)


def read_config_dict(path) -> dict:
    """``config.json`` of a checkpoint folder (or hub id) as a dict, whatever its ``model_type``."""
    return Qwen2_5_VLConfig.get_config_dict(str(path))[0]
