"""The released checkpoint's key names and shapes, written from the facts (REFERENCE-SR section 2).

Used to write tiny checkpoints in the released layout (:func:`vega3d.models.tiny.save_tiny_released`) and to
check the full-size key set against our classes on the meta device (:func:`check_released_keys`, the test
suite at reduced depth and ``benchmarks/released_keys.py`` at full depth).
"""

from __future__ import annotations

import torch

from vega3d.models.merger import MERGER_HIDDEN
from vega3d.models.released_sr import DIT_FILE, DIT_PREFIX, LAYOUT, released_settings


def released_generative_shapes(llm_dim: int, dit: dict, merger: str = "mlp", hidden: int = MERGER_HIDDEN) -> dict:
    """Names and shapes of the released checkpoint's generative keys (REFERENCE-SR section 2).

    ``dit``: ``dim, ffn_dim, num_layers, text_dim, freq_dim, in_channels, patch`` of the Wan DiT (original
    naming: 27 tensors per block plus 15, so 825 for the 30 blocks of Wan2.1-T2V-1.3B).
    """
    dim, ffn, patch = dit["dim"], dit["ffn_dim"], tuple(dit.get("patch", (1, 2, 2)))
    channels = dit.get("in_channels", 16)
    shapes = {"generative_merger.mlp.0.weight": (hidden, dit["dim"] * (4 if merger == "mlp" else 1)),
              "generative_merger.mlp.0.bias": (hidden,), "generative_merger.mlp.2.weight": (llm_dim, hidden),
              "generative_merger.mlp.2.bias": (llm_dim,),
              "generative_fusion.norm1.weight": (llm_dim,), "generative_fusion.norm1.bias": (llm_dim,),
              "generative_fusion.norm2.weight": (llm_dim,), "generative_fusion.norm2.bias": (llm_dim,),
              "generative_fusion.gate_projection.0.weight": (1, 2 * llm_dim), "generative_fusion.gate_projection.0.bias": (1,),
              "generative_fusion.residual_scale": ()}
    if merger == "mlp":
        shapes["generative_merger.ln_q.weight"] = (dim,)
    tower = {"patch_embedding.weight": (dim, channels, *patch), "patch_embedding.bias": (dim,),
             "text_embedding.0.weight": (dim, dit["text_dim"]), "text_embedding.0.bias": (dim,),
             "text_embedding.2.weight": (dim, dim), "text_embedding.2.bias": (dim,),
             "time_embedding.0.weight": (dim, dit["freq_dim"]), "time_embedding.0.bias": (dim,),
             "time_embedding.2.weight": (dim, dim), "time_embedding.2.bias": (dim,),
             "time_projection.1.weight": (6 * dim, dim), "time_projection.1.bias": (6 * dim,),
             "head.modulation": (1, 2, dim), "head.head.weight": (channels * patch[0] * patch[1] * patch[2], dim),
             "head.head.bias": (channels * patch[0] * patch[1] * patch[2],)}
    for i in range(dit["num_layers"]):
        block = {"modulation": (1, 6, dim), "norm3.weight": (dim,), "norm3.bias": (dim,),
                 "ffn.0.weight": (ffn, dim), "ffn.0.bias": (ffn,), "ffn.2.weight": (dim, ffn), "ffn.2.bias": (dim,)}
        for attention in ("self_attn", "cross_attn"):
            for name in "qkvo":
                block.update({f"{attention}.{name}.weight": (dim, dim), f"{attention}.{name}.bias": (dim,)})
            block.update({f"{attention}.norm_q.weight": (dim,), f"{attention}.norm_k.weight": (dim,)})
        tower.update({f"blocks.{i}.{key}": shape for key, shape in block.items()})
    shapes.update({DIT_PREFIX + key: shape for key, shape in tower.items()})
    return shapes


#: Qwen2.5-VL-7B (the released base; hub config) and Wan2.1-T2V-1.3B: the full-size geometry of the checkpoint.
QWEN_7B = dict(hidden=3584, intermediate=18944, layers=28, kv_dim=512, vocab=152064,
               vision_hidden=1280, vision_intermediate=3420, vision_blocks=32)
WAN_1_3B = dict(dim=1536, ffn_dim=8960, num_layers=30, text_dim=4096, freq_dim=256, in_channels=16)


def released_base_shapes(q: dict = QWEN_7B) -> dict:
    """Names and shapes of the released checkpoint's Qwen2.5-VL keys, transformers 4.50 layout (REFERENCE-SR 2)."""
    v, d = q["vision_hidden"], q["hidden"]
    shapes = {"visual.patch_embed.proj.weight": (v, 3, 2, 14, 14), "visual.merger.ln_q.weight": (v,),
              "visual.merger.mlp.0.weight": (4 * v, 4 * v), "visual.merger.mlp.0.bias": (4 * v,),
              "visual.merger.mlp.2.weight": (d, 4 * v), "visual.merger.mlp.2.bias": (d,),
              "model.embed_tokens.weight": (q["vocab"], d), "model.norm.weight": (d,), "lm_head.weight": (q["vocab"], d)}
    for i in range(q["vision_blocks"]):
        block = {"norm1.weight": (v,), "norm2.weight": (v,), "attn.qkv.weight": (3 * v, v), "attn.qkv.bias": (3 * v,),
                 "attn.proj.weight": (v, v), "attn.proj.bias": (v,)}
        for name, shape in (("gate_proj", (q["vision_intermediate"], v)), ("up_proj", (q["vision_intermediate"], v)),
                            ("down_proj", (v, q["vision_intermediate"]))):
            block.update({f"mlp.{name}.weight": shape, f"mlp.{name}.bias": shape[:1]})
        shapes.update({f"visual.blocks.{i}.{k}": shape for k, shape in block.items()})
    for i in range(q["layers"]):
        layer = {"self_attn.q_proj.weight": (d, d), "self_attn.q_proj.bias": (d,), "self_attn.o_proj.weight": (d, d),
                 "self_attn.k_proj.weight": (q["kv_dim"], d), "self_attn.k_proj.bias": (q["kv_dim"],),
                 "self_attn.v_proj.weight": (q["kv_dim"], d), "self_attn.v_proj.bias": (q["kv_dim"],),
                 "mlp.gate_proj.weight": (q["intermediate"], d), "mlp.up_proj.weight": (q["intermediate"], d),
                 "mlp.down_proj.weight": (d, q["intermediate"]), "input_layernorm.weight": (d,),
                 "post_attention_layernorm.weight": (d,)}
        shapes.update({f"model.layers.{i}.{k}": shape for k, shape in layer.items()})
    return shapes


def qwen_7b_config(layers: int, vision_blocks: int, settings):
    """The Qwen2.5-VL-7B-Instruct hub config (widths), at the given depth."""
    from transformers import Qwen2_5_VLConfig

    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=layers,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000),
        vision_config=dict(depth=vision_blocks, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           fullatt_block_indexes=[vision_blocks - 1], window_size=112),
        tie_word_embeddings=False)
    config.vega3d = settings.to_dict()
    return config


def meta_shapes(module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def check_released_keys(q: dict = QWEN_7B, dit: dict = WAN_1_3B) -> int:
    """Assert that every released key maps onto our model (and the DiT onto diffusers' class) with its shape,
    and every key of ours is covered; returns the DiT's parameter count."""
    from accelerate import init_empty_weights

    from vega3d.models.convert import convert_state_dict
    from vega3d.models.dit_compare import _diffusers_names
    from vega3d.models.qwen_vega import Vega3DQwen2_5_VLForConditionalGeneration

    released = {**released_base_shapes(q), **released_generative_shapes(q["hidden"], dit)}
    settings = released_settings({"use_generative_encoder": True, "generative_encoder_tower_type": "wan_t2v_online",
                                  "generative_vision_tower_task": "t2v-1.3B"}, DIT_FILE, dit["dim"], dit["num_layers"])
    with init_empty_weights():
        model = Vega3DQwen2_5_VLForConditionalGeneration(qwen_7b_config(q["layers"], q["vision_blocks"], settings))
    side: dict = {}
    renamed = convert_state_dict({k: torch.empty(0) for k in released}, LAYOUT, side=side)
    ours = meta_shapes(model)
    assert set(renamed) == set(ours)
    mapping = {LAYOUT.rename(k): k for k in released if not k.startswith(DIT_PREFIX)}
    for key, shape in ours.items():
        assert shape == released[mapping[key]], key
    # The DiT: diffusers' converter names -> WanTransformer3DModel (the full model, head included)
    from diffusers import WanTransformer3DModel

    original = sorted(side[DIT_FILE])
    names = _diffusers_names(original)
    with init_empty_weights():
        wan = WanTransformer3DModel(num_attention_heads=dit["dim"] // 128, attention_head_dim=128, ffn_dim=dit["ffn_dim"],
                                    num_layers=dit["num_layers"], text_dim=dit["text_dim"], freq_dim=dit["freq_dim"],
                                    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
    wan_shapes = meta_shapes(wan)
    assert set(names.values()) == set(wan_shapes)
    for key in original:
        assert wan_shapes[names[key]] == released[DIT_PREFIX + key], key
    return sum(int(torch.Size(released[DIT_PREFIX + k]).numel()) for k in original)
