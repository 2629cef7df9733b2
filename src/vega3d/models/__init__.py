"""Qwen2.5-VL with the VEGA-3D generative branch (model, inputs, settings, tiny random test model)."""

from vega3d.models.inputs import QwenInputs
from vega3d.models.qwen_vega import (
    Vega3DQwen2_5_VLForConditionalGeneration,
    Vega3DQwen2_5_VLModel,
    load_model,
    resample_to_merged_grid,
)
from vega3d.models.settings import CONFIG_KEY, GenerativeSettings, MissingGenerativeSettings

__all__ = [
    "CONFIG_KEY", "GenerativeSettings", "MissingGenerativeSettings", "QwenInputs",
    "Vega3DQwen2_5_VLForConditionalGeneration", "Vega3DQwen2_5_VLModel", "load_model", "resample_to_merged_grid",
]
