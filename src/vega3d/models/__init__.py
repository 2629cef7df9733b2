"""Host models with the VEGA-3D generative branch (the branch itself, Qwen2.5-VL, Qwen3-VL, LLaVA-Video 3D, inputs, settings, tiny test models)."""

from vega3d.models.branch import GenerativeBranch, resample_to_merged_grid, resample_to_patch_grid, resample_tokens
from vega3d.models.inputs import QwenInputs
from vega3d.models.llava_video import (
    Vega3DLlavaVideoConfig,
    Vega3DLlavaVideoForConditionalGeneration,
    load_llava_video,
)
from vega3d.models.qwen_vega import (
    Vega3DQwen2_5_VLForConditionalGeneration,
    Vega3DQwen2_5_VLModel,
    load_model,
)
from vega3d.models.qwen3_vega import Vega3DQwen3VLForConditionalGeneration
from vega3d.models.settings import CONFIG_KEY, GenerativeSettings, MissingGenerativeSettings

__all__ = [
    "CONFIG_KEY", "GenerativeBranch", "GenerativeSettings", "MissingGenerativeSettings", "QwenInputs",
    "Vega3DQwen2_5_VLForConditionalGeneration", "Vega3DQwen2_5_VLModel", "Vega3DQwen3VLForConditionalGeneration",
    "load_model", "resample_to_merged_grid", "resample_to_patch_grid", "resample_tokens",
    "Vega3DLlavaVideoConfig", "Vega3DLlavaVideoForConditionalGeneration", "load_llava_video",
]
