"""Checkpoint layouts of LLaVA-Video checkpoints -> ``Vega3DLlavaVideoForConditionalGeneration`` (facts 15-16).

* ``llava-next``: lmms-lab ``LLaVA-Video-7B-Qwen2``, Video-3D LLM and the authors' VEGA-3D 3D checkpoints
  (the LLaVA-NeXT code base: ``model.layers``, ``model.mm_projector.{0,2}``, the SigLIP tower under
  ``model.vision_tower.vision_tower.vision_model``, ``model.feature_fusion``, top-level ``ground_head_*``).
  Its ``config.json`` is a Qwen2 config plus ``mm_*`` fields; the SigLIP tower is named, not described, by
  ``mm_vision_tower`` (a local folder's ``config.json`` is read; SigLIP-so400m-384 is known), and LLaVA-NeXT
  deletes its last encoder layer (27 -> 26).
* ``llava-hf``: transformers' LLaVA-OneVision checkpoints (``language_model.model.*``, ``vision_tower.*``,
  ``multi_modal_projector.*``, ``image_newline``; ``vision_model.`` in 4.4x releases).
"""

from __future__ import annotations

import json
from pathlib import Path

from vega3d.models.convert import Layout, register_layout

MODEL_TYPE = "vega3d_llava_video"
#: SigLIP-so400m-patch14-384 as LLaVA-NeXT builds it (last encoder layer deleted, no head).
SIGLIP_SO400M = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                     num_attention_heads=16, patch_size=14, image_size=384, layer_norm_eps=1e-6,
                     hidden_act="gelu_pytorch_tanh", vision_use_head=False)
QWEN2_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "use_sliding_window",
                "sliding_window", "max_window_layers", "attention_dropout", "bos_token_id", "eos_token_id")
#: LLaVA-NeXT fusion methods whose released weights map onto ours (other methods' keys are refused).
FUSION_METHODS = {"token_gated": ("gated", {"preset": "reference"})}
#: The fields of an authors' VEGA-3D 3D checkpoint's config.json that matter here (facts 15-16, 20, 36-37):
#: LLaVA-Video-7B-Qwen2's Qwen2-7B plus the mm_* and VEGA flags. Used for full-size checks on the meta device.
AUTHORS_3D_CONFIG = {
    "model_type": "llava_qwen", "architectures": ["LlavaQwenForCausalLM"], "hidden_size": 3584,
    "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    "vocab_size": 151649, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
    "tie_word_embeddings": False, "hidden_act": "silu", "mm_vision_tower": "google/siglip-so400m-patch14-384",
    "mm_hidden_size": 1152, "mm_projector_type": "mlp2x_gelu", "mm_newline_position": "grid",
    "mm_spatial_pool_mode": "bilinear", "mm_spatial_pool_stride": 2, "tokenizer_model_max_length": 32768,
    "world_position_embedding_type": "avg-discrete-sin3d", "object_feature_type": "patch14-pe",
    "ground_head_type": "infonce", "ground_token_ids": [151647], "coord_token_ids": [151648],
    "use_generative_feature": True, "generative_feat_dim": 1536, "use_feat_fusion": True,
    "feature_fusion_method": "token_gated",
}
DROP = (r"rotary_emb\.inv_freq$", r"embeddings\.position_ids$", r"vision_tower\.(vision_tower\.)?(vision_model\.)?head\.")

LLAVA_NEXT_RENAMES = (
    (r"^model\.embed_tokens\.", "model.language_model.embed_tokens."),
    (r"^model\.layers\.", "model.language_model.layers."),
    (r"^model\.norm\.", "model.language_model.norm."),
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
    (r"^model\.image_newline$", "model.image_newline"),
    (r"^model\.generative_projector\.([02])\.", r"model.generative_projector.\1."),
    (r"^model\.feature_fusion\.norm1\.", "model.fusion.norm_sem."),
    (r"^model\.feature_fusion\.norm2\.", "model.fusion.norm_gen."),
    (r"^model\.feature_fusion\.gate_projection\.0\.", "model.fusion.gate."),
    (r"^ground_head_obj\.([023])\.", r"grounding_head.object_mlp.\1."),
    (r"^ground_head_query\.([023])\.", r"grounding_head.query_mlp.\1."),
    (r"^ground_head_zero_target$", "grounding_head.zero_target"),
    (r"^lm_head\.", "lm_head."),
)
LLAVA_HF_RENAMES = (
    (r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^vision_tower\.(vision_model\.)?", "model.vision_tower."),
    (r"^multi_modal_projector\.", "model.multi_modal_projector."),
    (r"^image_newline$", "model.image_newline"),
    (r"^(model\.(language_model|vision_tower|multi_modal_projector)\.|model\.image_newline$|lm_head\.)", r"\1"),
)


def _vision_config(raw: dict) -> dict:
    tower = raw.get("mm_vision_tower")
    if not isinstance(tower, str):
        raise ValueError("config.json: no 'mm_vision_tower' (the SigLIP tower's name or folder)")
    if (Path(tower) / "config.json").is_file():
        siglip = json.loads((Path(tower) / "config.json").read_text())
        siglip = dict(siglip.get("vision_config", siglip))
        siglip.update(model_type="siglip_vision_model", vision_use_head=False,
                      num_hidden_layers=int(siglip["num_hidden_layers"]) - 1)  # LLaVA-NeXT deletes the last layer
        return siglip
    if tower.rstrip("/").endswith("siglip-so400m-patch14-384"):
        return dict(SIGLIP_SO400M)
    raise ValueError(f"config.json: mm_vision_tower {tower!r} is neither a local folder with a config.json nor "
                     "SigLIP-so400m-patch14-384")


def _require(raw: dict, key: str, allowed: tuple) -> None:
    if key in raw and raw[key] not in allowed:
        raise ValueError(f"config.json: {key}={raw[key]!r} is not supported by this model (supported: {allowed})")


def llava_next_config(raw: dict) -> dict:
    """A LLaVA-NeXT ``config.json`` (dict) -> ours."""
    for key, allowed in (("mm_projector_type", ("mlp2x_gelu",)), ("mm_newline_position", ("grid",)),
                         ("mm_spatial_pool_mode", ("bilinear",)), ("mm_spatial_pool_stride", (2,)),
                         ("world_position_embedding_type", ("avg-discrete-sin3d",)),
                         ("object_feature_type", ("patch14-pe",)), ("ground_head_type", ("infonce", None))):
        _require(raw, key, allowed)
    vision = _vision_config(raw)
    if int(raw.get("mm_hidden_size", vision["hidden_size"])) != int(vision["hidden_size"]):
        raise ValueError(f"config.json: mm_hidden_size {raw['mm_hidden_size']} differs from the SigLIP width {vision['hidden_size']}")
    text = {key: raw[key] for key in QWEN2_FIELDS if key in raw}
    text.update(model_type="qwen2", tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                rope_parameters={"rope_type": "default", "rope_theta": float(raw.get("rope_theta", 1_000_000.0))})
    generative = None
    if raw.get("use_generative_feature"):
        if not raw.get("use_feat_fusion", True):
            fusion, options = "sequence_concat", {}
        elif raw.get("feature_fusion_method", "token_gated") in FUSION_METHODS:
            fusion, options = FUSION_METHODS[raw.get("feature_fusion_method", "token_gated")]
        else:
            raise ValueError(f"config.json: feature_fusion_method {raw['feature_fusion_method']!r} has no weight mapping "
                             f"yet (supported: {', '.join(FUSION_METHODS)} and use_feat_fusion=false)")
        generative = dict(backbone="wan2.1-t2v-1.3b", feature_dim=int(raw.get("generative_feat_dim", 1536)),
                          backbone_options={"timestep": 300, "block": 20, "preset": "reference"},
                          fusion=fusion, fusion_options=options)
    ground, coord = raw.get("ground_token_ids") or [None], raw.get("coord_token_ids") or [None]
    return dict(model_type=MODEL_TYPE, architectures=["Vega3DLlavaVideoForConditionalGeneration"],
                text_config=text, vision_config=vision, vega3d=generative,
                grounding={} if raw.get("ground_head_type") == "infonce" else None,
                ground_token_id=ground[0], coord_token_id=coord[0],
                max_length=int(raw.get("tokenizer_model_max_length", 32768)), tie_word_embeddings=text["tie_word_embeddings"])


def llava_hf_config(raw: dict) -> dict:
    if raw.get("model_type") != "llava_onevision":
        raise ValueError(f"config.json: model_type {raw.get('model_type')!r} is not llava_onevision")
    out = {key: value for key, value in raw.items() if key not in ("architectures", "transformers_version")}
    return dict(out, model_type=MODEL_TYPE, architectures=["Vega3DLlavaVideoForConditionalGeneration"])


LLAVA_NEXT = register_layout(Layout(
    name="llava-next", description="LLaVA-NeXT: lmms-lab LLaVA-Video-7B-Qwen2, Video-3D LLM, the authors' VEGA-3D 3D models",
    renames=LLAVA_NEXT_RENAMES, detect=lambda keys: any(k.startswith("model.mm_projector.") for k in keys),
    drop=DROP, convert_config=llava_next_config,
    notes=("grounding_head.* when the checkpoint has no ground head", "model.generative_projector/fusion for LLaVA-Video"),
))
LLAVA_HF = register_layout(Layout(
    name="llava-hf", description="transformers LLaVA-OneVision (llava-hf/...-ov-hf)",
    renames=LLAVA_HF_RENAMES, drop=DROP, convert_config=llava_hf_config,
    detect=lambda keys: any(k.startswith(("language_model.model.", "multi_modal_projector.")) for k in keys),
))
