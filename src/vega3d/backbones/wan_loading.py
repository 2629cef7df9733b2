"""Load Wan2.1 weights for feature extraction: only the DiT blocks that run, in the dtype asked for.

``weights`` may be a local diffusers folder laid out as ``Wan2.1-T2V-1.3B-Diffusers`` (``transformer/``,
``vae/``), a hub id, an original single-file Wan checkpoint (converted by diffusers' own converter), an
original Wan release folder, or ``"random"`` (untrained weights, labelled so wherever shown).
``dit_weights`` (:func:`with_dit_weights`) takes the DiT's weights from elsewhere, keeping the config and
VAE of ``weights``: the released spatial-reasoning checkpoint holds its own (re-initialised) DiT under
``generative_encoder.tower.model.*`` in the original Wan naming, and that is the DiT it was trained with.

The truncated transformer is the real diffusers class built with ``num_layers = block + 1`` (and, for
VACE, only the control blocks whose hints are added before that block), filled from the checkpoint's
matching keys only: later blocks and the output head are never read from disk.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from vega3d.backbones.registry import RANDOM_WEIGHTS_LABEL, RANDOM_WEIGHTS_MARKER

_T2V_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                 text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                 qk_norm="rms_norm_across_heads", eps=1e-6)
_T2V_14B = {**_T2V_1_3B, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
_TI2V_5B = {**_T2V_1_3B, "num_attention_heads": 24, "ffn_dim": 14336, "in_channels": 48, "out_channels": 48}
# The Wan2.2 VAE (16x spatial, 48 latent channels, 2x2 pixel patches). Random weights get neutral latent
# statistics (mean 0, std 1); a real folder's vae/config.json carries the published ones.
_WAN22_VAE = dict(base_dim=160, decoder_base_dim=256, z_dim=48, in_channels=12, out_channels=12, patch_size=2,
                  scale_factor_spatial=16, scale_factor_temporal=4, is_residual=True, latents_mean=[0.0] * 48,
                  latents_std=[1.0] * 48)


@dataclass(frozen=True)
class WanVariant:
    hub_id: str
    vace: bool
    architecture: dict  # the published transformer config, used for "random" weights
    vae_architecture: dict = field(default_factory=dict)  # the VAE's, where it is not diffusers' default (Wan2.1)
    size: tuple[int, int] = (720, 1280)  # default DiT input (height, width): the paper's for Wan2.1


WAN_VARIANTS = {
    "wan2.1-t2v-1.3b": WanVariant("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", False, _T2V_1_3B),
    "wan2.1-t2v-14b": WanVariant("Wan-AI/Wan2.1-T2V-14B-Diffusers", False, _T2V_14B),
    "wan2.1-vace-1.3b": WanVariant("Wan-AI/Wan2.1-VACE-1.3B-diffusers", True,
                                   {**_T2V_1_3B, "vace_layers": list(range(0, 30, 2)), "vace_in_channels": 96}),
    "wan2.1-vace-14b": WanVariant("Wan-AI/Wan2.1-VACE-14B-diffusers", True,
                                  {**_T2V_14B, "vace_layers": list(range(0, 40, 5)), "vace_in_channels": 96}),
    "wan2.2-ti2v-5b": WanVariant("Wan-AI/Wan2.2-TI2V-5B-Diffusers", False, _TI2V_5B, _WAN22_VAE, (704, 1280)),  # 16x VAE
}


def transformer_class(vace: bool):
    from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

    return WanVACETransformer3DModel if vace else WanTransformer3DModel


@dataclass
class WanWeights:
    """Where the transformer and VAE come from, resolved once from the ``weights`` argument."""

    label: str  # recorded in configs and reports
    transformer_config: dict
    transformer_files: list[Path]  # safetensors; empty for random weights
    original_naming: bool  # original Wan key names (converted with diffusers' converter)
    vae: Path | None  # diffusers vae folder, original .pth/.safetensors file, or None for random
    folder: Path | None  # where a default prompt embedding is looked for
    dit_prefix: str | None = None  # only keys under this prefix are the DiT's (a whole-model checkpoint)
    dit_state: dict | None = None  # DiT tensors given in memory (original or diffusers naming)


#: Key prefixes under which other checkpoints hold a Wan DiT: the released spatial-reasoning model's
#: generative encoder, and ComfyUI-style single files.
DIT_PREFIXES = ("generative_encoder.tower.model.", "model.diffusion_model.")


def with_dit_weights(weights: WanWeights, dit) -> WanWeights:
    """``weights`` with the DiT tensors taken from ``dit``: a state dict, a safetensors file, or a checkpoint
    folder (``model.safetensors[.index.json]``); original Wan or diffusers naming, bare or under one of
    :data:`DIT_PREFIXES`. The architecture (config) and the VAE stay those of ``weights``."""
    if isinstance(dit, dict):
        original = "text_embedding.0.weight" in dit
        return replace(weights, label=f"{weights.label} + DiT from a state dict", dit_state=dit, original_naming=original,
                       transformer_files=[])
    files, prefix, original = dit_files(dit)
    return replace(weights, label=f"{weights.label} + DiT from {Path(dit).expanduser().resolve()}", transformer_files=files,
                   original_naming=original, dit_prefix=prefix)


def dit_files(dit) -> tuple[list[Path], str, bool]:
    """``(safetensors files, key prefix, original naming?)`` of the Wan DiT held by a file or checkpoint folder."""
    path = Path(dit).expanduser()
    if path.is_dir():
        from vega3d.models.convert import checkpoint_files

        files = checkpoint_files(path)
    elif path.is_file() and path.suffix == ".safetensors":
        files = [path]
    else:
        raise FileNotFoundError(f"dit_weights {dit}: no such safetensors file or checkpoint folder")
    keys = set()
    for file in files:
        if file.suffix != ".safetensors":
            raise ValueError(f"dit_weights {dit}: {file.name} is not safetensors (convert it with `vega3d convert`)")
        from safetensors import safe_open

        with safe_open(str(file), "pt") as reader:
            keys.update(reader.keys())
    prefix = next((p for p in DIT_PREFIXES if any(k.startswith(p) for k in keys)), "")
    bare = {k.removeprefix(prefix) for k in keys if k.startswith(prefix)}
    if "text_embedding.0.weight" in bare:
        original = True
    elif "condition_embedder.text_embedder.linear_1.weight" in bare:
        original = False
    else:
        raise ValueError(f"dit_weights {dit}: holds no Wan DiT (no text_embedding.0 / condition_embedder keys"
                         f"{' under ' + prefix if prefix else ''})")
    return files, prefix, original


def resolve_weights(name: str, weights, vae=None, transformer_config: dict | None = None) -> WanWeights:
    variant = WAN_VARIANTS[name]
    if weights == "random":
        config = {**variant.architecture, **(transformer_config or {})}
        return WanWeights(RANDOM_WEIGHTS_LABEL, config, [], False, None, None)
    if weights is None:
        weights = variant.hub_id
    path = Path(weights).expanduser()
    if path.is_file():
        return _single_file(path, [path], vae)
    if path.is_dir() and (path / "transformer").is_dir():
        return _diffusers_folder(path, vae)
    if path.is_dir():
        files = sorted(path.glob("diffusion_pytorch_model*.safetensors"))
        if not files:
            raise FileNotFoundError(
                f"{path}: neither a diffusers folder (transformer/, vae/) nor an original Wan folder "
                "(diffusion_pytorch_model*.safetensors, Wan2.1_VAE.pth)"
            )
        return _single_file(path / "config.json", files, vae)
    from vega3d.backbones.checkpoints import hub_snapshot

    return _diffusers_folder(hub_snapshot(weights, ["model_index.json", "transformer/*", "vae/*"],
                                          "Wan2.1-T2V-1.3B-Diffusers"), vae)


def _diffusers_folder(folder: Path, vae) -> WanWeights:
    config_file = folder / "transformer" / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: missing (expected a diffusers Wan folder)")
    files = sorted((folder / "transformer").glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder / 'transformer'}: no .safetensors weights (only safetensors are loaded)")
    config = {k: v for k, v in json.loads(config_file.read_text()).items() if not k.startswith("_")}
    label = str(folder.resolve())
    if (folder / RANDOM_WEIGHTS_MARKER).exists():
        label = f"{RANDOM_WEIGHTS_LABEL}: {label}"
    return WanWeights(label, config, files, False, Path(vae) if vae else folder / "vae", folder)


def _single_file(config_path: Path, files: list[Path], vae) -> WanWeights:
    """An original Wan checkpoint: the config is inferred from tensor shapes (``config.json`` beside it wins)."""
    from safetensors import safe_open

    shapes = {}
    for file in files:
        with safe_open(str(file), "pt") as reader:
            shapes.update({k.removeprefix("model.diffusion_model."): reader.get_slice(k).get_shape() for k in reader.keys()})
    if any(k.startswith("condition_embedder.") for k in shapes):  # diffusers names; the original says text_embedding
        raise ValueError(f"{files[0]}: a diffusers WanTransformer3DModel file, not an original single-file Wan "
                         f"checkpoint; pass the diffusers folder that holds transformer/ and vae/ ({files[0].parent.parent})")
    if "patch_embedding.weight" not in shapes:
        raise ValueError(f"{files[0]}: not a Wan transformer checkpoint (no patch_embedding.weight)")
    missing = [k for k in ("text_embedding.0.weight", "time_embedding.0.weight", "blocks.0.ffn.0.weight") if k not in shapes]
    if missing:
        raise ValueError(f"{files[0]}: not a complete original Wan transformer checkpoint (no {', '.join(missing)})")
    if any(k.startswith("img_emb.") for k in shapes):
        raise ValueError(f"{files[0]}: image-to-video Wan checkpoints are not supported (text-to-video and VACE are)")
    original = {}
    side_config = config_path if config_path.suffix == ".json" else config_path.parent / "config.json"
    if side_config.is_file():
        original = json.loads(side_config.read_text())
    dim, in_channels, *patch = shapes["patch_embedding.weight"]
    num_layers = 1 + max(int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k)))
    heads = int(original.get("num_heads", dim // 128))  # every published Wan2.1 model has 128-wide heads
    config = dict(
        patch_size=tuple(patch), num_attention_heads=heads, attention_head_dim=dim // heads, in_channels=in_channels,
        out_channels=in_channels, text_dim=shapes["text_embedding.0.weight"][1],
        freq_dim=shapes["time_embedding.0.weight"][1], ffn_dim=shapes["blocks.0.ffn.0.weight"][0],
        num_layers=num_layers, cross_attn_norm="blocks.0.norm3.weight" in shapes,
        qk_norm="rms_norm_across_heads", eps=float(original.get("eps", 1e-6)),
    )
    vace_blocks = {int(m.group(1)) for k in shapes if (m := re.match(r"vace_blocks\.(\d+)\.", k))}
    if vace_blocks:
        step = num_layers // len(vace_blocks)
        config["vace_layers"] = list(original.get("vace_layers", range(0, step * len(vace_blocks), step)))
        config["vace_in_channels"] = shapes["vace_patch_embedding.weight"][1]
    if vae is None:
        vae = files[0].parent / "Wan2.1_VAE.pth"
        if not vae.is_file():
            raise FileNotFoundError(
                f"{files[0]}: a single-file transformer needs a VAE; none at {vae}: pass vae=PATH "
                "(original Wan2.1_VAE.pth or a diffusers vae/ folder)"
            )
    return WanWeights(str(files[0].resolve()), config, files, True, Path(vae), files[0].parent)


def truncated_config(config: dict, block: int) -> dict:
    """The same architecture with blocks ``0..block`` only (and the VACE blocks feeding them)."""
    num_layers = int(config["num_layers"])
    if not 0 <= block < num_layers:
        raise ValueError(f"block={block} is out of range: this model has blocks 0..{num_layers - 1}")
    out = {**config, "num_layers": block + 1}
    if "vace_layers" in config:
        # Hints are added after block i; block `block`'s own output is taken before its hint.
        out["vace_layers"] = [i for i in config["vace_layers"] if i < block] or [0]
    return out


def load_transformer(weights: WanWeights, vace: bool, block: int, dtype: torch.dtype, seed: int = 0):
    """The truncated diffusers transformer (eval, frozen) with only the weights of the blocks that run."""
    config = truncated_config(weights.transformer_config, block)
    build = lambda: _without_head(transformer_class(vace).from_config(config))  # noqa: E731
    source = weights.transformer_files[0] if weights.transformer_files else "dit_weights (state dict)"
    state = None if weights.dit_state is None else {k: v.float() for k, v in weights.dit_state.items()}
    if state is None and not weights.transformer_files:
        model = _random(build, seed)
    elif weights.original_naming:
        from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

        num_vace = len(config.get("vace_layers", ()))
        needed = lambda k: _original_key_needed(k, config["num_layers"], num_vace)  # noqa: E731
        if state is None:
            state = _read_tensors(weights.transformer_files, needed, weights.dit_prefix)
        state = convert_wan_transformer_to_diffusers({k: v for k, v in state.items() if needed(k)})
        model = _filled(build, state, source)
    else:
        model = _filled(build, state, source, files=weights.transformer_files, prefix=weights.dit_prefix)
    cast_keeping_fp32(model, dtype)
    return model.eval().requires_grad_(False)


def load_vae(weights: WanWeights, dtype: torch.dtype, seed: int = 0, vae_config: dict | None = None):
    """The Wan VAE's encoder half (encoder + quant_conv): the decoder never runs and is not loaded."""
    from diffusers import AutoencoderKLWan

    source = weights.vae
    if source is None:
        vae = _random(lambda: _encoder_only(AutoencoderKLWan(**(vae_config or {}))), seed + 1)
    elif source.is_dir():
        config = {k: v for k, v in AutoencoderKLWan.load_config(str(source)).items() if not k.startswith("_")}
        files = sorted(source.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"VAE {source}: no .safetensors weights (only safetensors are loaded)")
        vae = _filled(lambda: _encoder_only(AutoencoderKLWan.from_config(config)), None, files[0], files=files)
    elif source.is_file():
        vae = _original_vae(source)
    else:
        raise FileNotFoundError(f"VAE {source}: no such file or folder")
    cast_keeping_fp32(vae, dtype)
    return vae.eval().requires_grad_(False)


def _original_vae(path: Path):
    """An original ``Wan2.1_VAE.pth`` (or .safetensors): encoder keys renamed by diffusers' converter."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    needed = lambda key: key.startswith(("encoder.", "conv1."))  # noqa: E731  (conv1 = quant_conv)
    if path.suffix == ".safetensors":
        state = _read_tensors([path], needed)
    else:
        state = {k: v.float() for k, v in torch.load(path, map_location="cpu", weights_only=True).items() if needed(k)}
    state = convert_wan_vae_to_diffusers(state)
    if "encoder.conv_in.weight" not in state or "quant_conv.weight" not in state:
        raise ValueError(f"{path}: not a Wan2.1 VAE checkpoint (no encoder.conv1 / conv1 weights)")
    # The architecture from the shapes: base width, latent channels, residual blocks per level (4 levels).
    resamples_and_blocks = len({k.split(".")[2] for k in state if k.startswith("encoder.down_blocks.")})
    config = dict(base_dim=state["encoder.conv_in.weight"].shape[0], z_dim=state["quant_conv.weight"].shape[0] // 2,
                  num_res_blocks=(resamples_and_blocks - 3) // 4)
    return _filled(lambda: _encoder_only(AutoencoderKLWan(**config)), state, path)


def _without_head(model):
    """Drop the output head (norm_out, proj_out, its modulation table): block tokens never reach it."""
    model.norm_out = model.proj_out = None
    model.scale_shift_table = None
    return model


def _encoder_only(vae):
    """Drop the VAE decoder half (decoder, post_quant_conv): features only need the posterior mean."""
    vae.decoder = vae.post_quant_conv = None
    return vae


def _random(build, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _filled(build, state: dict | None, source: Path, files: list[Path] | None = None, prefix: str | None = None):
    """``build()`` on the meta device, then filled (strictly) from the keys of ``state`` or ``files`` it has."""
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on the meta device, buffers (RoPE tables) real
        model = build()
    wanted = set(model.state_dict())
    if state is None:
        state = _read_tensors(files, wanted.__contains__, prefix)
    else:
        state = {k: v for k, v in state.items() if k in wanted}  # later blocks and the head are not loaded
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise ValueError(f"{source}: does not match the {type(model).__name__} architecture: {error}") from None
    return model


def _read_tensors(files: list[Path], needed, prefix: str | None = None) -> dict:
    """The tensors whose (prefix-stripped) name satisfies ``needed``, in fp32 (cast later), nothing else.
    With ``prefix``, only the keys under it (a DiT inside a whole-model checkpoint)."""
    from safetensors import safe_open

    state = {}
    for file in files:
        with safe_open(str(file), "pt") as reader:
            for key in reader.keys():
                if prefix and not key.startswith(prefix):
                    continue
                name = key.removeprefix(prefix or "model.diffusion_model.")
                if needed(name):
                    state[name] = reader.get_tensor(key).float()
    return state


def _original_key_needed(name: str, num_blocks: int, num_vace: int) -> bool:
    match = re.match(r"(vace_)?blocks\.(\d+)\.", name)
    if match:
        return int(match.group(2)) < (num_vace if match.group(1) else num_blocks)
    return not name.startswith("head.")  # the output head never runs


def cast_keeping_fp32(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast parameters to ``dtype`` except the modules diffusers keeps in fp32; buffers (RoPE) untouched.

    ``from_single_file(torch_dtype=bf16)`` would also cast the RoPE tables and norms; this does not.
    """
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, param in model.named_parameters():
        target = torch.float32 if keep.intersection(name.split(".")) else dtype
        param.data = param.data.to(target)


def save_random_wan(folder, name: str = "wan2.1-t2v-1.3b", transformer_config: dict | None = None,
                    vae_config: dict | None = None, seed: int = 0) -> Path:
    """Write an untrained model as a diffusers folder (``transformer/``, ``vae/``) marked as random.

    For tests and demos of the real loader; every backbone built from it is labelled RANDOM WEIGHTS.
    """
    from diffusers import AutoencoderKLWan

    folder = Path(folder)
    variant = WAN_VARIANTS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = transformer_class(variant.vace)(**{**variant.architecture, **(transformer_config or {})})
        vae = AutoencoderKLWan(**{**variant.vae_architecture, **(vae_config or {})})
    transformer.save_pretrained(folder / "transformer")
    vae.save_pretrained(folder / "vae")
    pipeline = "WanVACEPipeline" if variant.vace else "WanPipeline"
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline, "transformer": ["diffusers", type(transformer).__name__],
                                                         "vae": ["diffusers", "AutoencoderKLWan"]}, indent=2))
    (folder / RANDOM_WEIGHTS_MARKER).write_text(f"{RANDOM_WEIGHTS_LABEL}: written by vega3d save_random_wan(seed={seed})\n")
    return folder
