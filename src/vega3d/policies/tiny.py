"""A tiny random-weight policy of the real classes, saved in the real layout (tests, toy proof, benchmarks).

The timm ids stay the real ones (their block structure, prefix tokens, LayerScale and SigLIP's attention
pool), shrunk through ``timm_model_kwargs``; the LLM is a small ``LlamaConfig``; the tokenizer is
character-level with Llama's special ids (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2) and "▁". Everything built
here is RANDOM WEIGHTS.
"""

from __future__ import annotations

import string

from transformers import LlamaTokenizer

from vega3d.policies.config import OpenVLAConfig
from vega3d.policies.inputs import PolicyInputs, PrismaticImageProcessor


def tiny_config(image_size: int = 56, hidden_size: int = 32, num_layers: int = 1, vision_dim: int = 16,
                vision_depth: int = 3) -> OpenVLAConfig:
    """``image_size / 14`` patches a side; each featurizer ``vision_dim`` wide and ``vision_depth`` blocks deep."""
    vision = {"embed_dim": vision_dim, "depth": vision_depth, "num_heads": 2}
    tokenizer = tiny_tokenizer()
    return OpenVLAConfig(
        image_sizes=[image_size, image_size], timm_model_kwargs=[dict(vision), dict(vision)], pad_token_id=len(tokenizer),
        text_config={"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": num_layers,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": len(tokenizer) + 1,
                     "pad_token_id": len(tokenizer), "max_position_embeddings": 1024},
    )


def tiny_tokenizer() -> LlamaTokenizer:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "<0x0A>": 4}
    for char in string.ascii_letters + string.digits + string.punctuation:
        vocab.setdefault(char, len(vocab))
    tokenizer = LlamaTokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"pad_token": "<PAD>"})
    return tokenizer


def tiny_inputs(config: OpenVLAConfig, num_action_tokens: int) -> PolicyInputs:
    return PolicyInputs(tiny_tokenizer(), PrismaticImageProcessor(config.image_sizes[0]), num_action_tokens)

