"""Write a tiny model in the original LLaVA-NeXT layout, as the authors' code saves it (facts 15-16)."""

from __future__ import annotations

import json
import re

from safetensors.torch import save_file

# Our key -> the LLaVA-NeXT key, written out independently of vega3d.models.llava_layouts.
TO_ORIGINAL = [
    (r"^model\.language_model\.", "model."),
    (r"^model\.vision_tower\.", "model.vision_tower.vision_tower.vision_model."),
    (r"^model\.multi_modal_projector\.linear_1\.", "model.mm_projector.0."),
    (r"^model\.multi_modal_projector\.linear_2\.", "model.mm_projector.2."),
    (r"^model\.fusion\.norm_sem\.", "model.feature_fusion.norm1."),
    (r"^model\.fusion\.norm_gen\.", "model.feature_fusion.norm2."),
    (r"^model\.fusion\.gate\.", "model.feature_fusion.gate_projection.0."),
    (r"^grounding_head\.object_mlp\.", "ground_head_obj."),
    (r"^grounding_head\.query_mlp\.", "ground_head_query."),
    (r"^grounding_head\.zero_target$", "ground_head_zero_target"),
]


def original_key(key: str) -> str:
    for pattern, replacement in TO_ORIGINAL:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key)
    return key


def write_llava_next(model, folder, siglip_folder, extra_keys=None):
    """Keys, a config.json with LLaVA-NeXT's fields, and the named SigLIP tower's own config (27 -> 26 layers)."""
    folder.mkdir(parents=True)
    siglip_folder.mkdir(parents=True)
    vision, text = model.config.vision_config, model.config.text_config
    (siglip_folder / "config.json").write_text(json.dumps({
        "model_type": "siglip", "vision_config": {
            "hidden_size": vision.hidden_size, "intermediate_size": vision.intermediate_size,
            "num_hidden_layers": vision.num_hidden_layers + 1, "num_attention_heads": vision.num_attention_heads,
            "patch_size": vision.patch_size, "image_size": vision.image_size}}))
    state = {original_key(k): v.contiguous() for k, v in model.state_dict().items()}
    state.update(extra_keys or {})
    save_file(state, str(folder / "model.safetensors"))
    config = {
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava_qwen", "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size, "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads, "num_key_value_heads": text.num_key_value_heads,
        "vocab_size": text.vocab_size, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 4096,
        "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_sliding_window": False,
        "mm_vision_tower": str(siglip_folder), "mm_hidden_size": vision.hidden_size, "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "mm_patch_merge_type": "spatial_unpad",
        "mm_newline_position": "grid", "mm_spatial_pool_mode": "bilinear", "mm_spatial_pool_stride": 2,
        "image_aspect_ratio": "anyres_max_9", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "tokenizer_model_max_length": 32768, "tokenizer_padding_side": "right", "frames_upbound": 32,
        "world_position_embedding_type": "avg-discrete-sin3d", "object_feature_type": "patch14-pe",
        "ground_head_type": "infonce" if getattr(model, "grounding_head", None) is not None else None,
        "ground_token_ids": [model.config.ground_token_id], "coord_token_ids": [model.config.coord_token_id],
        "use_generative_feature": model.generative is not None, "use_feat_fusion": True,
        "feature_fusion_method": "token_gated", "generative_projector_type": "mlp2x_gelu",
        "generative_feat_dim": model.generative.feature_dim if model.generative is not None else 1536,
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder
