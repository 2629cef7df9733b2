"""Tiny random-weight models of the REAL library classes, saved in the layout the backbones load.

For tests and for trying the tools without downloading weights: ``save_tiny_model("sd2.1", folder)``
writes a folder that ``load_backbone("sd2.1", weights=folder, resolution=..., ...)`` loads through the
same ``from_pretrained`` code as the real checkpoint. The folder holds a ``RANDOM_WEIGHTS.txt`` file, so
every backbone built from it is labelled "RANDOM WEIGHTS (untrained, for tests)". Weights are drawn
from ``torch.manual_seed(seed)``.

``TINY_OPTIONS[name]`` are the options (input resolution) that fit each tiny model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vega3d.backbones.registry import RANDOM_WEIGHTS_MARKER

TINY_OPTIONS = {
    "siglip-so400m-384": {"resolution": 56},  # 4x4 patches of 14 px
    "dinov3-vitl16": {"resolution": 64},  # 4x4 patches of 16 px
    "vjepa2-vitg16": {"resolution": 64},
    "sd2.1": {"resolution": 32},  # 4x4 latent, 2x2 after the UNet's one downsampling
    "svd": {"resolution": 32},
    "sd-vae": {"resolution": 32},
    "vggt": {"resolution": 56},  # 4x4 patches of 14 px
    "seva": {"resolution": 128},  # 16x16 latent, 2x2 after the UNet's three downsamplings
    "vmem": {"resolution": 128},
}
_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2)
# diffusers' temporal VAE hard-codes 32 GroupNorm groups, so 32 channels is its smallest width.
_VAE = dict(block_out_channels=(32, 32, 32, 32), layers_per_block=1, latent_channels=4)


def _siglip(folder: Path) -> None:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    SiglipVisionModel(SiglipVisionConfig(**_VIT, image_size=56, patch_size=14)).save_pretrained(folder)
    _json(folder / "preprocessor_config.json", {"image_mean": [0.5] * 3, "image_std": [0.5] * 3})


def _dinov3(folder: Path) -> None:
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    DINOv3ViTModel(DINOv3ViTConfig(**_VIT, image_size=64, patch_size=16, num_register_tokens=2)).save_pretrained(folder)
    _json(folder / "preprocessor_config.json", {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]})


def _vjepa2(folder: Path) -> None:
    from transformers import VJEPA2Config, VJEPA2Model

    config = VJEPA2Config(hidden_size=48, num_attention_heads=2, num_hidden_layers=3, crop_size=64, patch_size=16,
                          frames_per_clip=4, tubelet_size=2, pred_hidden_size=24, pred_num_attention_heads=2,
                          pred_num_hidden_layers=1, num_pooler_layers=1)
    VJEPA2Model(config).save_pretrained(folder)


def _sd_vae(folder: Path) -> None:
    from diffusers import AutoencoderKL

    blocks = len(_VAE["block_out_channels"])
    AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                  **{**_VAE, "block_out_channels": (8, 8, 16, 16)}, norm_num_groups=4, scaling_factor=0.18215).save_pretrained(folder)


def _clip_text(folder: Path) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    # A byte-level vocabulary of the three special tokens: the empty prompt needs no other token.
    tokenizer = CLIPTokenizer(pad_token="!", model_max_length=8)
    tokenizer.save_pretrained(folder / "tokenizer")
    config = CLIPTextConfig(**_VIT, vocab_size=len(tokenizer), max_position_embeddings=8, projection_dim=32,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    CLIPTextModel(config).save_pretrained(folder / "text_encoder")


def _sd21(folder: Path) -> None:
    from diffusers import DDIMScheduler, UNet2DConditionModel

    _sd_vae(folder / "vae")
    _clip_text(folder)
    UNet2DConditionModel(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1, cross_attention_dim=32,
                         attention_head_dim=(2, 4), norm_num_groups=8, sample_size=4).save_pretrained(folder / "unet")
    # Stable Diffusion 2.1's own scheduler settings.
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction").save_pretrained(folder / "scheduler")


def _svd(folder: Path) -> None:
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    blocks = len(_VAE["block_out_channels"])
    AutoencoderKLTemporalDecoder(down_block_types=("DownEncoderBlock2D",) * blocks, **_VAE).save_pretrained(folder / "vae")
    UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), layers_per_block=1,
        cross_attention_dim=32, num_attention_heads=(2, 4), addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24, num_frames=4, sample_size=4,
    ).save_pretrained(folder / "unet")
    vision = CLIPVisionConfig(**_VIT, image_size=32, patch_size=8, projection_dim=32)
    CLIPVisionModelWithProjection(vision).save_pretrained(folder / "image_encoder")
    _json(folder / "feature_extractor" / "preprocessor_config.json",
          {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]})
    # Stable Video Diffusion's own scheduler settings (EDM sigmas, v-prediction, continuous time).
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type="v_prediction",
                           interpolation_type="linear", use_karras_sigmas=True, sigma_min=0.002, sigma_max=700.0,
                           timestep_type="continuous", steps_offset=1).save_pretrained(folder / "scheduler")


def _vggt(folder: Path) -> None:
    from vega3d.backbones.vggt import PREFIX, VggtAggregator, VggtConfig, to_published
    from vega3d.io import save_safetensors

    model = VggtAggregator(VggtConfig(dim=32, depth=2, heads=2, mlp_hidden=64, image_size=28, dino_depth=2, dino_mlp_hidden=64))
    _randomize_constants(model)
    # The published file is the whole VGGT; a tiny model holds the aggregator part only.
    save_safetensors({PREFIX + k: v for k, v in to_published(model.state_dict()).items()}, folder / "model.safetensors")


def _seva_parts(folder: Path) -> dict:
    """The UNet's tensors under their published names, plus the SD VAE and CLIP image encoder beside them."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from vega3d.backbones.unet_camera import SevaConfig, SevaInputBlocks, to_published

    _sd_vae(folder / "vae")
    # SEVA fixes 32 GroupNorm groups and 64-channel heads, so 64 channels is its smallest width.
    unet = SevaInputBlocks(SevaConfig(model_channels=64, channel_mult=(1, 1, 2, 2), context_dim=32, time_dim=256))
    vision = CLIPVisionConfig(**_VIT, image_size=32, patch_size=8, projection_dim=32)
    CLIPVisionModelWithProjection(vision).save_pretrained(folder / "image_encoder")
    _json(folder / "image_encoder" / "preprocessor_config.json",
          {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]})
    return to_published(unet.state_dict())


def _seva(folder: Path) -> None:
    from vega3d.io import save_safetensors

    save_safetensors(_seva_parts(folder), folder / "modelv1.1.safetensors")


def _vmem(folder: Path) -> None:
    from vega3d.io import atomic_write

    # Vmem publishes a pickled state dict (keys possibly "module."-prefixed): written so, to test that path.
    state = {f"module.{key}": value for key, value in _seva_parts(folder).items()}
    atomic_write(folder / "vmem_weights.pth", lambda tmp: torch.save(state, tmp))


def _randomize_constants(model: torch.nn.Module) -> None:
    """Learned tokens and LayerScales start at 0 / 0.01: draw them, so a tiny model exercises every path."""
    for name, parameter in model.named_parameters():
        if name.endswith(("_token", "gamma", "lambda1", "register_tokens")):
            torch.nn.init.normal_(parameter, std=0.5)


_BUILDERS = {"siglip-so400m-384": _siglip, "dinov3-vitl16": _dinov3, "vjepa2-vitg16": _vjepa2,
             "sd2.1": _sd21, "svd": _svd, "sd-vae": _sd_vae, "vggt": _vggt, "seva": _seva, "vmem": _vmem}

# Video DiT families (vega3d.backbones.video_dit): (transformer config, VAE config) of the real classes, 3 blocks.
_COG_VAE = dict(down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
                block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2)
_COG = dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8, text_embed_dim=16,
            num_layers=3, sample_width=8, sample_height=8, sample_frames=9, max_text_seq_length=8)
TINY_VIDEO_DITS = {
    "cogvideox-2b": (_COG, _COG_VAE),
    "cogvideox-5b": ({**_COG, "use_rotary_positional_embeddings": True}, _COG_VAE),
    "hunyuanvideo": (dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2,
                          num_single_layers=1, num_refiner_layers=1, text_embed_dim=16, pooled_projection_dim=8,
                          rope_axes_dim=(4, 4, 4)),
                     dict(latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
                          up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                          norm_num_groups=2)),
    "ltx-video": (dict(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                       num_layers=3, caption_channels=16),
                  dict(latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                       layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1))),
    # Mochi's VAE hard-codes 32 GroupNorm groups: 32 channels is its smallest width.
    "mochi-1": (dict(num_attention_heads=2, attention_head_dim=8, num_layers=3, pooled_projection_dim=8, in_channels=4,
                     text_embed_dim=16, time_embed_dim=4, max_sequence_length=8),
                dict(encoder_block_out_channels=(32,) * 4, decoder_block_out_channels=(32,) * 4, latent_channels=4,
                     layers_per_block=(1,) * 5, add_attention_block=(False,) * 5, latents_mean=(0.0,) * 4, latents_std=(1.0,) * 4)),
}


def _video_dit(name: str):
    def build(folder: Path) -> None:
        from vega3d.backbones.video_dit import save_random_dit

        save_random_dit(folder, name, *TINY_VIDEO_DITS[name])
    return build


_BUILDERS.update({name: _video_dit(name) for name in TINY_VIDEO_DITS})
TINY_OPTIONS.update({name: {"size": (64, 64) if name == "ltx-video" else (32, 32)} for name in TINY_VIDEO_DITS})  # 32x LTX VAE


def _json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2))


def save_tiny_model(name: str, folder, seed: int = 0) -> Path:
    """Write a tiny random-weight ``name`` model to ``folder`` (created) and return the folder."""
    if name not in _BUILDERS:
        raise KeyError(f"no tiny model for backbone {name!r}; available: {', '.join(sorted(_BUILDERS))}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        _BUILDERS[name](folder)
    (folder / RANDOM_WEIGHTS_MARKER).write_text(f"random initialisation of a tiny {name} config (seed {seed}); not trained\n")
    return folder
