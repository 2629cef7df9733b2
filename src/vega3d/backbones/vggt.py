"""VGGT-1B's aggregator (paper Tab. 4): the last aggregator layer's patch tokens, 2048 channels at 14x14.

Written from the published architecture (REFERENCE-ZOO Sec. 1). The patch embedding is a DINOv2 ViT-L/14
with 4 registers, VGGT-trained: transformers' ``Dinov2WithRegistersModel`` computes it exactly, so it is
used as is, with VGGT's tensors renamed onto it. The aggregator that follows alternates 24 frame blocks
(attention within each frame) and 24 global blocks (attention over all frames at once); both have
QK-LayerNorm and a 2-D RoPE that no library block provides, so they are written here. The feature is the
concatenation [frame block 23 output | global block 23 output] of the patch tokens, with no final norm.

All frames of a call form ONE sequence for the global blocks (the released extractor feeds the 32 frames
of a scan together), so frame 0 is special: it gets camera/register token slot 0, the others slot 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vega3d.backbones.checkpoints import WeightsError, find_weight_file, load_strict, read_state_dict, strip_prefix
from vega3d.backbones.pretrained import IMAGENET_MEAN, IMAGENET_STD, PretrainedBackbone
from vega3d.backbones.registry import BackboneUnavailable, register_backbone
from vega3d.scenes import resize_center_crop

WEIGHT_FILES = ("model.safetensors", "model.pt")
PREFIX = "aggregator."
#: The other parts of the full VGGT checkpoint; dropped (the feature never reaches them).
HEADS = ("camera_head.", "depth_head.", "point_head.", "track_head.")
LICENCE = "VGGT-1B weights: CC BY-NC 4.0 (non-commercial); a gated VGGT-1B-Commercial also exists"


@dataclass(frozen=True)
class VggtConfig:
    dim: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_hidden: int = 4096
    patch_size: int = 14
    image_size: int = 518  # the patch embedding's position table covers 37x37 patches
    registers: int = 4  # aggregator registers per frame
    dino_depth: int = 24
    dino_mlp_hidden: int = 4096
    dino_registers: int = 4
    rope_frequency: float = 100.0

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], path) -> "VggtConfig":
        """The architecture read off the tensor shapes (the published file carries no config)."""
        try:
            dim = state["camera_token"].shape[-1]
            head_dim = state["frame_blocks.0.attn.q_norm.weight"].shape[0]
            grid = math.isqrt(state["patch_embed.pos_embed"].shape[1] - 1)
            patch = state["patch_embed.patch_embed.proj.weight"].shape[-1]
            return cls(dim=dim, depth=_count(state, "frame_blocks"), heads=dim // head_dim,
                       mlp_hidden=state["frame_blocks.0.mlp.fc1.weight"].shape[0], patch_size=patch,
                       image_size=grid * patch, registers=state["register_token"].shape[2],
                       dino_depth=_count(state, "patch_embed.blocks"),
                       dino_mlp_hidden=state["patch_embed.blocks.0.mlp.fc1.weight"].shape[0],
                       dino_registers=state["patch_embed.register_tokens"].shape[1])
        except KeyError as error:
            raise WeightsError(f"{path}: not a VGGT checkpoint (no tensor {PREFIX}{error.args[0]})") from None


def _count(state, prefix: str) -> int:
    return len({key.split(".")[len(prefix.split("."))] for key in state if key.startswith(prefix + ".")})


def rope_2d(x: torch.Tensor, positions: torch.Tensor, frequency: float) -> torch.Tensor:
    """VGGT's 2-D RoPE on ``x [B, heads, N, D]``: dims [0, D/2) rotate with the row, [D/2, D) with the column."""
    half = x.shape[-1] // 2
    inv_freq = frequency ** (-torch.arange(0, half, 2, device=x.device, dtype=torch.float32) / half)
    out = []
    for part, coord in zip(x.split(half, dim=-1), positions.unbind(-1)):
        angles = coord.float()[:, None] * inv_freq[None]
        table = torch.cat([angles, angles], dim=-1).to(x.dtype)
        rotated = torch.cat([-part[..., half // 2:], part[..., :half // 2]], dim=-1)
        out.append(part * table.cos() + rotated * table.sin())
    return torch.cat(out, dim=-1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, rope_frequency: float):
        super().__init__()
        self.heads, self.rope_frequency = heads, rope_frequency
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(dim // heads, eps=1e-5)
        self.k_norm = nn.LayerNorm(dim // heads, eps=1e-5)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q = rope_2d(self.q_norm(q), positions, self.rope_frequency)
        k = rope_2d(self.k_norm(k), positions, self.rope_frequency)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 0.01))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class AggregatorBlock(nn.Module):
    """Pre-LN block: x += ls1(attn(norm1 x)); x += ls2(mlp(norm2 x)), LayerNorm eps 1e-5."""

    def __init__(self, config: VggtConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim, eps=1e-5)
        self.attn = Attention(config.dim, config.heads, config.rope_frequency)
        self.ls1 = LayerScale(config.dim)
        self.norm2 = nn.LayerNorm(config.dim, eps=1e-5)
        self.mlp = Mlp(config.dim, config.mlp_hidden)
        self.ls2 = LayerScale(config.dim)

    def forward(self, x, positions):
        x = x + self.ls1(self.attn(self.norm1(x), positions))
        return x + self.ls2(self.mlp(self.norm2(x)))


def dinov2_config(config: VggtConfig):
    from transformers import Dinov2WithRegistersConfig

    return Dinov2WithRegistersConfig(hidden_size=config.dim, num_hidden_layers=config.dino_depth,
                                     num_attention_heads=config.heads, mlp_ratio=config.dino_mlp_hidden // config.dim,
                                     patch_size=config.patch_size, image_size=config.image_size,
                                     num_register_tokens=config.dino_registers, layer_norm_eps=1e-6)


class VggtAggregator(nn.Module):
    """Normalised images ``[S, 3, H, W]`` of one scene -> last-layer patch tokens ``[S, H/p, W/p, 2 * dim]``."""

    def __init__(self, config: VggtConfig):
        from transformers import Dinov2WithRegistersModel

        super().__init__()
        self.config = config
        self.patch_embed = Dinov2WithRegistersModel(dinov2_config(config))
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, config.dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, config.registers, config.dim))
        self.frame_blocks = nn.ModuleList(AggregatorBlock(config) for _ in range(config.depth))
        self.global_blocks = nn.ModuleList(AggregatorBlock(config) for _ in range(config.depth))

    @property
    def num_special(self) -> int:
        return 1 + self.config.registers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s, _, height, width = images.shape
        h, w = height // self.config.patch_size, width // self.config.patch_size
        hidden = self.patch_embed(pixel_values=images).last_hidden_state
        patches = hidden[:, 1 + self.config.dino_registers:]  # drop DINO's CLS and registers
        special = torch.cat([self.camera_token, self.register_token], dim=2)[0]  # [2, 1 + R, C]
        per_frame = torch.cat([special[:1], special[1:].expand(s - 1, -1, -1)])
        tokens = torch.cat([per_frame.to(patches.dtype), patches], dim=1)
        p = tokens.shape[1]
        grid = torch.cartesian_prod(torch.arange(h, device=images.device), torch.arange(w, device=images.device)) + 1
        positions = torch.cat([grid.new_zeros(self.num_special, 2), grid])  # special tokens sit at (0, 0)
        for frame_block, global_block in zip(self.frame_blocks, self.global_blocks):
            tokens = frame_block(tokens, positions)
            frame_out = tokens
            tokens = global_block(tokens.reshape(1, s * p, -1), positions.repeat(s, 1)).reshape(s, p, -1)
        features = torch.cat([frame_out, tokens], dim=-1)[:, self.num_special:]
        return features.reshape(s, h, w, -1)


# Patch-embedding tensors: VGGT name (after "patch_embed.") <-> transformers name (after "patch_embed.").
_EMBED = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
          "pos_embed": "embeddings.position_embeddings", "register_tokens": "embeddings.register_tokens",
          "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
          "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
          "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
# Per-layer names: VGGT's DINOv2 block (after "blocks.N.") -> transformers' (after "encoder.layer.N.").
_LAYER = (("attn.qkv", "attention.qkv"), ("attn.proj", "attention.o_proj"), ("ls1.gamma", "layer_scale1.lambda1"),
          ("ls2.gamma", "layer_scale2.lambda1"))
_QKV = ("q_proj", "k_proj", "v_proj")


def _rename_patch_embed(state, embed: dict, layers: tuple[str, str], renames) -> dict[str, torch.Tensor]:
    """Rename the ``patch_embed.*`` tensors: whole names through ``embed``, layer ``layers[0].N`` to
    ``layers[1].N`` with ``renames`` applied to the rest; every other tensor is kept."""
    out = {}
    for key, value in state.items():
        name = key.removeprefix("patch_embed.")
        layer = re.match(rf"{re.escape(layers[0])}\.(\d+)\.(.+)", name)
        if name == key:
            out[key] = value
        elif layer is None:
            out["patch_embed." + embed[name]] = value
        else:
            rest = layer[2]
            for old, new in renames:
                rest = rest.replace(old, new)
            out[f"patch_embed.{layers[1]}.{layer[1]}.{rest}"] = value
    return out


def to_published(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Module state dict -> the aggregator's tensors as VGGT names them (without ``aggregator.``);
    transformers' separate q, k, v projections are VGGT's one fused qkv."""
    fused = {}
    for key, value in state.items():
        q = re.match(r"(patch_embed\..+\.attention\.)q_proj\.(weight|bias)$", key)
        if q:
            fused[f"{q[1]}qkv.{q[2]}"] = torch.cat([state[f"{q[1]}{proj}.{q[2]}"] for proj in _QKV])
        elif not re.match(r"patch_embed\..+\.attention\.[kv]_proj\.", key):
            fused[key] = value
    return _rename_patch_embed(fused, {v: k for k, v in _EMBED.items()}, ("encoder.layer", "blocks"),
                               [(new, old) for old, new in _LAYER])


def from_published(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """VGGT's aggregator tensors -> the module's state dict (the inverse of :func:`to_published`)."""
    out = {}
    for key, value in _rename_patch_embed(state, _EMBED, ("blocks", "encoder.layer"), _LAYER).items():
        qkv = re.match(r"(patch_embed\..+\.attention\.)qkv\.(weight|bias)$", key)
        if qkv:
            out.update({f"{qkv[1]}{proj}.{qkv[2]}": part for proj, part in zip(_QKV, value.chunk(3))})
        else:
            out[key] = value
    return out


def read_aggregator_state(path) -> dict[str, torch.Tensor]:
    """The ``aggregator.*`` tensors of a VGGT checkpoint (prefix removed); the heads are dropped."""
    state = strip_prefix(read_state_dict(path), "module.")
    others = sorted(key for key in state if not key.startswith(PREFIX) and not key.startswith(HEADS))
    if others:
        raise WeightsError(f"{path}: tensors that are neither VGGT's aggregator nor its heads: "
                           f"{', '.join(others[:6])}{' ...' if len(others) > 6 else ''}")
    return {key[len(PREFIX):]: value for key, value in state.items() if key.startswith(PREFIX)}


def load_aggregator(path, device="cpu", dtype=torch.float32) -> VggtAggregator:
    state = read_aggregator_state(path)
    config = VggtConfig.from_state_dict(state, path)
    with torch.device("meta"):
        model = VggtAggregator(config)
    load_strict(model, state, path, f"a VGGT aggregator {config}", to_published, from_published)
    return model.to(device=device, dtype=dtype)


@register_backbone("vggt", "VGGT-1B aggregator at 196x196: last-layer patch tokens [frame | global], 2048 channels",
                   licence=LICENCE)
class VggtBackbone(PretrainedBackbone):
    """``weights``: a VGGT checkpoint file or the folder holding ``model.safetensors`` / ``model.pt``
    (``facebook/VGGT-1B``). ``resolution``: the side frames are scaled to (covering) and centre-cropped
    to (196: 14x14 patches). All frames go through the global blocks together (``batch_size`` does not apply)."""

    name = "vggt"
    sweep_options = ("grid",)

    def __init__(self, weights=None, resolution=196, **options):
        if weights is None:
            raise BackboneUnavailable(f"backbone 'vggt' is not available without its weights: pass weights= the folder "
                                      f"of facebook/VGGT-1B ({' or '.join(WEIGHT_FILES)}) or one of those files")
        super().__init__(weights, **options)
        self.weight_file = find_weight_file(self.weights, WEIGHT_FILES, "VGGT")
        self.model = load_aggregator(self.weight_file, self.device, self.dtype)
        self.resolution = int(resolution)
        if self.resolution % self.model.config.patch_size:
            raise ValueError(f"resolution must be a multiple of the patch size {self.model.config.patch_size}; "
                             f"got {self.resolution}")
        self.register_constants(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        self.check_options()

    def encode(self, frames, scene_id=None):
        side = self.resolution
        pixels, _ = resize_center_crop(self.to_model(frames), (side, side))
        tokens = self.model(((pixels - self.mean) / self.std).to(self.dtype))
        return self.pool(tokens).to(frames.device)

    def config(self):
        side = self.resolution // self.model.config.patch_size
        return {**super().config(), "resolution": self.resolution, "native_grid": [side, side],
                "feature": f"aggregator layer {self.model.config.depth - 1} patch tokens [frame | global]",
                "hidden_size": 2 * self.model.config.dim, "weight_file": str(self.weight_file)}
