"""The released spatial-reasoning checkpoint (H-EmbodVis/VEGA-3D-Spatial-Reasoning): layout ``vega3d-sr``.

Qwen2.5-VL-7B in the transformers 4.50 layout (``visual.*``, ``model.layers.*``, ``lm_head``) plus
``generative_merger.*`` (the merger), ``generative_fusion.*`` (``token_gated_residual``) and the frozen
Wan2.1 DiT under ``generative_encoder.tower.model.*`` in the original Wan naming (REFERENCE-SR section 2).

The released construction re-initialises that DiT's Linear and Conv3d weights (``from_pretrained`` of the
Qwen base sees them as missing) and the checkpoint stores the re-initialised weights, which the model was
trained and evaluated with. So the DiT is always taken from the checkpoint: ``vega3d convert`` writes it,
renamed to diffusers' ``WanTransformer3DModel`` naming by diffusers' own converter, to
``generative_dit.safetensors`` beside the model, and the backbone option ``dit_weights`` points at it;
a direct load points ``dit_weights`` at the released folder itself. The Wan2.1 folder named by the
config's ``generative_encoder_path`` still provides the architecture and the VAE.

:func:`released_settings` maps the released config to the ``reference`` preset of the same code path:
frames as images, Wan fill-crop to 832x480, t = 299, block 29 at its native 30x52 grid, bilinear resize
to Qwen's unmerged patch grid, the merger (or ``avg``), the residual token gate.
"""

from __future__ import annotations

import json
from pathlib import Path

from vega3d.fusion import released_fusion
from vega3d.models.convert import Layout, SideFile, converted_config, converted_shards, register_layout
from vega3d.models.merger import MERGER_HIDDEN
from vega3d.models.settings import CONFIG_KEY, GenerativeSettings

DIT_PREFIX = "generative_encoder.tower.model."
DIT_FILE = "generative_dit.safetensors"
TOWERS = {"wan_t2v_online": "wan2.1-t2v-1.3b", "wan_vace_online": "wan2.1-vace-1.3b"}
TASKS = {"t2v-1.3B": "wan2.1-t2v-1.3b", "vace-1.3B": "wan2.1-vace-1.3b", "t2v-14B": "wan2.1-t2v-14b",
         "vace-14B": "wan2.1-vace-14b"}
#: Released fusion methods whose keys this layout renames (the token gates onto AdaptiveGatedFusion; add has
#: none); the names are translated by vega3d.fusion.released_fusion.
FUSION_METHODS = ("token_gated_residual", "token_gated", "add")
FUSION_KEYS = ((r"^generative_fusion\.norm1\.", "model.fusion.norm_sem."),
               (r"^generative_fusion\.norm2\.", "model.fusion.norm_gen."),
               (r"^generative_fusion\.gate_projection\.0\.", "model.fusion.gate."),
               (r"^generative_fusion\.residual_scale$", "model.fusion.residual_scale"))
RELEASED_SIZE = (480, 832)  # SIZE_CONFIGS["832*480"]: W=832, H=480
PATCH = 16  # VAE 8x times DiT patch 2


def _convert_dit(state: dict) -> dict:
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    return convert_wan_transformer_to_diffusers(dict(state))


def released_settings(config: dict, dit_weights: str, feature_dim: int, num_blocks: int) -> GenerativeSettings:
    """The released config's ``generative_*`` attributes -> our settings (the ``reference`` preset);
    ``feature_dim`` and ``num_blocks`` are the checkpoint's DiT width and depth."""
    if not config.get("use_generative_encoder"):
        raise ValueError("config.json: use_generative_encoder is not true (not a released VEGA-3D spatial-reasoning checkpoint)")
    task = config.get("generative_vision_tower_task")
    tower = config.get("generative_encoder_tower_type", "wan_vace_online")
    backbone = TASKS.get(task) if task not in (None, "", "none", "null") else TOWERS.get(tower)
    if backbone is None:
        raise ValueError(f"config.json: unsupported generative tower {tower!r} / task {task!r} (known: {sorted(TASKS)})")
    method = config.get("generative_fusion_method", "token_gated_residual")
    if method not in FUSION_METHODS:
        raise ValueError(f"config.json: released fusion {method!r}: the vega3d-sr layout maps the keys of "
                         f"{', '.join(FUSION_METHODS)} only")
    merger = config.get("generative_merger_type", "mlp")
    if merger not in ("mlp", "avg"):
        raise ValueError(f"config.json: unknown generative_merger_type {merger!r} (released: mlp, avg)")
    if float(config.get("generative_vision_tower_shift", 5.0)) != 5.0:
        raise ValueError("config.json: generative_vision_tower_shift other than 5.0 is not reproduced by the reference preset")
    width, height = (int(v) for v in str(config.get("generative_vision_tower_size", "832*480")).split("*"))
    block = int(config.get("generative_vision_tower_feat_block_idx", -1)) % num_blocks  # -1 = the last block
    fusion, fusion_options = released_fusion(method, int(config.get("generative_fusion_num_layers", 1)))
    return GenerativeSettings(
        backbone=backbone, feature_dim=feature_dim, backbone_weights=config.get("generative_encoder_path"),
        backbone_options={"preset": "reference", "size": [height, width], "grid": [height // PATCH, width // PATCH],
                          "block": block, "timestep": int(config.get("generative_vision_tower_timestep", 300)),
                          "frame_mode": "per_frame", "dit_weights": dit_weights},
        fusion=fusion, fusion_options=fusion_options,
        projector="merger" if merger == "mlp" else "avg",
        projector_options={"hidden_dim": int(config.get("generative_merger_hidden_dim", MERGER_HIDDEN))},
        resample="bilinear", visual_input="images",
    )


def _ours(config: dict, dit_weights: str, shapes: dict) -> dict:
    """Released config + the checkpoint's shapes -> our config.json (the DiT width is read from the merger:
    the released ``generative_encoder_feature_dim`` is not the real width; its depth from the DiT keys)."""
    blocks = {key[len(DIT_PREFIX):].split(".")[1] for key in shapes if key.startswith(DIT_PREFIX + "blocks.")}
    if not blocks:
        raise ValueError(f"checkpoint: no {DIT_PREFIX}* keys. The released model was trained with the DiT weights its "
                         "construction re-initialised, which only the checkpoint holds: without them the released "
                         "behaviour cannot be reproduced (a pristine Wan2.1 DiT is a different model)")
    if "generative_merger.ln_q.weight" in shapes:
        feature_dim = shapes["generative_merger.ln_q.weight"][0]
    elif "generative_merger.mlp.0.weight" in shapes:
        feature_dim = shapes["generative_merger.mlp.0.weight"][1]
    else:
        raise ValueError("checkpoint: no generative_merger weights (ln_q / mlp.0)")
    settings = released_settings(config, dit_weights, int(feature_dim), len(blocks))
    ours = {k: v for k, v in config.items() if not k.startswith(("generative_", "use_generative_encoder"))}
    ours[CONFIG_KEY] = settings.to_dict()
    ours["vega3d_converted_from"] = LAYOUT.name
    return ours


LAYOUT = register_layout(Layout(
    name="vega3d-sr",
    description="released VEGA-3D spatial-reasoning checkpoint (Qwen2.5-VL, transformers 4.50 layout, Wan DiT inside)",
    renames=(
        (r"^visual\.", "model.visual."),
        (r"^model\.", "model.language_model."),
        (r"^lm_head\.", "lm_head."),
        (r"^generative_merger\.", "model.generative_projector."),
        *FUSION_KEYS,
    ),
    detect=lambda keys: any(k.startswith(("generative_merger.", "generative_fusion.")) for k in keys),
    drop=(r"rotary_emb\.inv_freq$",),
    side_files=(SideFile(DIT_PREFIX, DIT_FILE, _convert_dit),),
    finish_config=lambda config, shapes: _ours(config, DIT_FILE, shapes),
))


def is_released(config) -> bool:
    """A released spatial-reasoning config (``use_generative_encoder``, no ``vega3d`` section)."""
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    return bool(get("use_generative_encoder", False)) and get(CONFIG_KEY) is None


def load_released(path: str | Path, dtype=None):
    """The released folder loaded directly (no conversion written): the layout's renames in memory, the
    DiT read from the folder itself when the backbone is built."""
    from accelerate import init_empty_weights
    from transformers import Qwen2_5_VLConfig

    from vega3d.models.qwen_vega import Vega3DQwen2_5_VLForConditionalGeneration

    path = Path(path)
    released = json.loads((path / "config.json").read_text())
    config = converted_config(path, LAYOUT)
    config[CONFIG_KEY]["backbone_options"]["dit_weights"] = str(path.resolve())
    config = Qwen2_5_VLConfig.from_dict(config)
    config.name_or_path = str(path)
    with init_empty_weights():
        model = Vega3DQwen2_5_VLForConditionalGeneration(config)
    state = {}
    for _, tensors in converted_shards(path, LAYOUT):
        state.update(tensors)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        missing = [k for k in missing if k != "lm_head.weight"]  # tied: the embedding is the head
    if missing or unexpected:
        raise ValueError(f"{path}: the released checkpoint does not fit Qwen2.5-VL + branch "
                         f"(missing {missing[:4]}, unexpected {unexpected[:4]}; config {released.get('model_type')})")
    model.tie_weights()
    return model.eval()
