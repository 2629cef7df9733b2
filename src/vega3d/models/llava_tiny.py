"""A tiny random-weight LLaVA-Video 3D model (real transformers classes: SigLIP, Qwen2) for tests and toys.

Everything built here has RANDOM WEIGHTS (``TINY_LABEL`` says so wherever it is shown). The tokenizer is
the byte-level Qwen2 tokenizer of models/tiny.py with ``<ground>`` and ``<coord>`` added (fact 20).
"""

from __future__ import annotations

import torch

from vega3d.models.llava_video import Vega3DLlavaVideoConfig, Vega3DLlavaVideoForConditionalGeneration
from vega3d.models.settings import GenerativeSettings
from vega3d.models.tiny import tiny_processor

TINY_LABEL = "tiny LLaVA-Video 3D model with RANDOM WEIGHTS (no pretrained weights)"


def tiny_tokenizer():
    return tiny_processor().tokenizer


def tiny_llava_config(tokenizer, hidden_size: int = 48, num_layers: int = 1, image_size: int = 56,
                      generative: GenerativeSettings | None = None, grounding: dict | None = None,
                      **options) -> Vega3DLlavaVideoConfig:
    """A 1-layer Qwen2 + 1-layer SigLIP (patch 14) config; ``hidden_size`` divisible by 6 keeps the position
    code's per-axis channel count even."""
    ids = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    return Vega3DLlavaVideoConfig(
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_hidden_layers=num_layers, num_attention_heads=2,
                         num_key_value_heads=1, eos_token_id=ids[0], pad_token_id=ids[1], max_position_embeddings=4096),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, patch_size=14, image_size=image_size, vision_use_head=False),
        vega3d=None if generative is None else generative.to_dict(), grounding=grounding, random_weights=True, **options)


def build_tiny_llava(tokenizer=None, generative: GenerativeSettings | None = None, grounding: dict | None = None,
                     seed: int = 0, **config_options):
    """``(model, tokenizer)``: a tiny random model whose tokenizer has ``<ground>`` (with a head) and ``<coord>``."""
    tokenizer = tokenizer or tiny_tokenizer()
    config = tiny_llava_config(tokenizer, generative=generative, grounding=grounding, **config_options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Vega3DLlavaVideoForConditionalGeneration(config)
    model.add_location_tokens(tokenizer)
    return model, tokenizer
