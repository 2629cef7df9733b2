"""A tiny random-weight Qwen2.5-VL and processor, built from the real transformers classes.

Used by the tests, the toy training proof and the benchmarks: real Qwen2.5-VL weights cannot be
downloaded here. Everything built here is RANDOM (``TINY_LABEL`` says so wherever it is shown). The
tokenizer is byte-level with no merges (one token per UTF-8 byte) plus Qwen's special tokens, and the
chat template is the Qwen2-VL format without the default system prompt (shorter sequences).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from vega3d.models.inputs import QwenInputs
from vega3d.models.settings import CONFIG_KEY, GenerativeSettings

TINY_LABEL = "tiny Qwen2.5-VL with RANDOM initial weights (no pretrained weights)"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_processor(image_size: int = 56, patch_size: int = 14, per_group_video: bool = False) -> QwenInputs:
    """Byte-level Qwen2 tokenizer + Qwen2-VL PIL image processor that keeps ``image_size`` square frames
    (Qwen3-VL: ``patch_size=16, per_group_video=True``)."""
    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               additional_special_tokens=SPECIAL_TOKENS[1:])
    tokenizer.chat_template = CHAT_TEMPLATE
    pixels = image_size * image_size
    processor = Qwen2VLImageProcessorPil(min_pixels=pixels, max_pixels=pixels, patch_size=patch_size)
    return QwenInputs(tokenizer, processor, per_group_video=per_group_video)


def tiny_config(processor: QwenInputs, hidden_size: int = 64, num_layers: int = 2,
                generative: GenerativeSettings | None = None) -> Qwen2_5_VLConfig:
    """A 2-layer Qwen2.5-VL config whose special token ids match ``processor``'s tokenizer."""
    tokenizer = processor.tokenizer
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    head_dim = 16
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=hidden_size // head_dim, num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
            bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
            max_position_embeddings=4096,
        ),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden_size,
                           fullatt_block_indexes=[1], window_size=56),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    config.random_weights = True  # read by `vega3d ask --gates` so plots say the weights are random
    if generative is not None:
        setattr(config, CONFIG_KEY, generative.to_dict())
    return config


def tiny_qwen3_config(processor: QwenInputs, hidden_size: int = 64, generative: GenerativeSettings | None = None):
    """A 2-layer Qwen3-VL config (16-px patches, DeepStack from vision layer 0) matching ``processor``."""
    from transformers import Qwen3VLConfig

    from vega3d.models.qwen3_vega import Vega3DQwen3VLConfig

    ids = {token: processor.tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    values = dict(
        text_config=dict(vocab_size=len(processor.tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True,
                                          "rope_theta": 10000.0},
                         max_position_embeddings=4096, pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, out_hidden_size=hidden_size,
                           num_position_embeddings=64, deepstack_visual_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    config = (Qwen3VLConfig if generative is None else Vega3DQwen3VLConfig)(**values)
    config.random_weights = True
    if generative is not None:
        setattr(config, CONFIG_KEY, generative.to_dict())
    return config


def build_tiny_model(processor: QwenInputs, generative: GenerativeSettings | None = None, seed: int = 0,
                     family: str = "qwen2_5_vl", **config_options):
    """Random tiny Qwen2.5-VL (``family="qwen3_vl"``: Qwen3-VL); with ``generative`` settings, the VEGA-3D
    model (same seed, same base weights)."""
    from vega3d.models.qwen_vega import Vega3DQwen2_5_VLForConditionalGeneration

    if family == "qwen3_vl":
        from transformers import Qwen3VLForConditionalGeneration

        from vega3d.models.qwen3_vega import Vega3DQwen3VLForConditionalGeneration

        config = tiny_qwen3_config(processor, generative=generative, **config_options)
        cls = Qwen3VLForConditionalGeneration if generative is None else Vega3DQwen3VLForConditionalGeneration
    else:
        config = tiny_config(processor, generative=generative, **config_options)
        cls = Qwen2_5_VLForConditionalGeneration if generative is None else Vega3DQwen2_5_VLForConditionalGeneration
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)


def save_tiny(folder: str | Path, processor: QwenInputs, model) -> Path:
    """Write model and processor to ``folder`` the way a real checkpoint folder looks."""
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_released(folder: str | Path, processor: QwenInputs, dit: dict, merger: str = "mlp", hidden: int = 32,
                       seed: int = 0, wan_path: str = "data/models/Wan2.1-T2V-1.3B") -> Path:
    """A RANDOM tiny checkpoint in the released spatial-reasoning layout (transformers 4.50 key names and
    flat config, ``generative_*`` keys and config attributes from REFERENCE-SR), for the converter's tests.

    The DiT tensors are drawn like the released construction leaves them: Linear / Conv3d weights from
    N(0, 0.02) with zero biases, norm weights 1, modulation tables random.
    """
    from safetensors.torch import save_file

    from vega3d.models.released_keys import released_generative_shapes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = build_tiny_model(processor, seed=seed)
    state = {}
    for key, value in base.state_dict().items():  # ours -> the transformers 4.50 layout
        key = key.replace("model.visual.", "visual.", 1).replace("model.language_model.", "model.", 1)
        state[key] = value.detach().clone()
    generator = torch.Generator().manual_seed(seed + 1)
    llm_dim = base.config.text_config.hidden_size
    for key, shape in released_generative_shapes(llm_dim, dit, merger, hidden).items():
        if key.endswith("residual_scale"):
            value = torch.tensor(0.2)
        elif "norm" in key.rsplit(".", 2)[-2] or "ln_q" in key:
            value = torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)
        elif key.endswith("bias"):
            value = torch.zeros(shape)
        else:
            value = torch.randn(shape, generator=generator) * 0.02
        state[key] = value
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = base.config.to_dict()
    text = config.pop("text_config")
    config = {**{k: v for k, v in text.items() if k not in ("model_type", "architectures")}, **config}
    config.update(architectures=["Qwen2_5_VLForConditionalGeneration"], use_generative_encoder=True,
                  generative_encoder_tower_type="wan_t2v_online", generative_encoder_path=wan_path,
                  generative_vision_tower_task="t2v-1.3B", generative_encoder_feature_dim=2048,
                  generative_encoder_freeze=True, generative_fusion_method="token_gated_residual",
                  generative_fusion_num_layers=1, generative_merger_type=merger, generative_merger_hidden_dim=hidden)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    processor.save_pretrained(folder)
    return folder
