"""The configuration of the Qwen2.5-VL VEGA-3D family: Qwen2.5-VL's own, under its own ``model_type``.

Checkpoints written before the family had a ``model_type`` say ``qwen2_5_vl`` and carry a ``vega3d``
section; :func:`vega3d.models.qwen_vega.own_config` reads both.
"""

from __future__ import annotations

from transformers import Qwen2_5_VLConfig

MODEL_TYPE = "vega3d_qwen2_5_vl"


class Vega3DQwen2_5_VLConfig(Qwen2_5_VLConfig):
    model_type = MODEL_TYPE
