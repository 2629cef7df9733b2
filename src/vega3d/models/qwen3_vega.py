"""Qwen3-VL with the VEGA-3D generative branch (beyond the paper): the same branch, another host.

What differs from Qwen2.5-VL (:mod:`vega3d.models.qwen_vega`):

- patches of 16 px (not 14), merged 2x2: a merged token covers 32x32 px; temporal patch 2 as before;
- DeepStack: the vision tower also hands intermediate features (``deepstack_features``, from its layers
  ``deepstack_visual_indexes``) that are *added* to the hidden states of the first LLM layers at the
  visual positions. The branch fuses the main visual tokens (the merger's output, the ones that replace
  the placeholders), exactly where it does for Qwen2.5-VL; the DeepStack features pass through unchanged,
  so the generative signal enters at the LLM input and the DeepStack injections keep Qwen3's own path;
- a video is a sequence of temporal groups, each its own ``<|vision_start|> ... <|vision_end|>`` segment
  after a ``<t seconds>`` timestamp (:class:`vega3d.models.inputs.QwenInputs` writes them when
  ``per_group_video`` is set), so M-RoPE sees one grid per group.

Its own ``model_type`` (``vega3d_qwen3_vl``) marks a VEGA-3D Qwen3-VL checkpoint; the generative settings
sit under the same ``vega3d`` config key; the family is registered with the Auto classes
(:func:`vega3d.models.auto.register_family`).
"""

from __future__ import annotations

import functools

from torch import nn
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel, Qwen3VLPreTrainedModel

from vega3d.models.auto import register_family
from vega3d.models.qwen_vega import QwenGenerationShell, QwenVisualBranch

MODEL_TYPE = "vega3d_qwen3_vl"


class Vega3DQwen3VLConfig(Qwen3VLConfig):
    model_type = MODEL_TYPE


class Vega3DQwen3VLModel(QwenVisualBranch, Qwen3VLModel):
    """Qwen3-VL base model plus the generative projector and fusion."""

    config_class = Vega3DQwen3VLConfig

    def __init__(self, config):
        super().__init__(config)
        self.init_qwen_branch(config)

    def unfused_video_features(self, pixel_values_videos, video_grid_thw, **kwargs):
        # Qwen3-VL's video features call get_image_features; call the unfused one so only videos are fused here.
        return Qwen3VLModel.get_image_features(self, pixel_values_videos, video_grid_thw, **kwargs)


class Vega3DQwen3VLForConditionalGeneration(QwenGenerationShell, Qwen3VLForConditionalGeneration):
    """``Qwen3VLForConditionalGeneration`` whose visual tokens carry the generative branch; call it like
    Qwen3-VL, adding ``generative_tokens=[...]`` (one ``[T, h, w, C]`` per video, or per sample for images)."""

    config_class = Vega3DQwen3VLConfig

    @functools.wraps(Qwen3VLForConditionalGeneration.forward)  # keeps the signature generate() checks against
    def forward(self, *args, **kwargs):
        return self.forward_with_instruction_labels(*args, **kwargs)

    def __init__(self, config):
        Qwen3VLPreTrainedModel.__init__(self, config)
        self.model = Vega3DQwen3VLModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


register_family(MODEL_TYPE, Vega3DQwen3VLConfig, Vega3DQwen3VLForConditionalGeneration)
