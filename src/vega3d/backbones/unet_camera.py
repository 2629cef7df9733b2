"""SEVA's camera-conditioned multi-view UNet (shared by Vmem), its input half up to input block 11.

Written from the published architecture (REFERENCE-ZOO Sec. 2). diffusers provides the parts whose math
and tensors match exactly: the sinusoidal time embedding and its MLP (``Timesteps`` /
``TimestepEmbedding``), the 3x3 stride-2 ``Downsample2D``, and the spatial transformer block
(``BasicTransformerBlock``: self-attention, cross-attention, GEGLU feed-forward, each with a residual).
Written here, because no library block computes them:

- ``CameraResBlock``: diffusers' ``ResnetBlock2D`` has no FiLM from the Plücker map.
- ``TimeMixBlock``: diffusers' ``TemporalBasicTransformerBlock`` adds a residual after its last
  feed-forward; SEVA's does not (its output is added to the spatial block's output instead).
- ``MultiviewTransformer``: GroupNorm -> proj_in -> spatial block -> time mix -> proj_out, + input.

Input blocks get no 3-D multi-frame attention (SEVA uses it only in the middle/output blocks), so the
frames interact only through the time-mix attention at each pixel. ``num_frames`` is the number of
frames of one scene in the batch (all of them in one pass, as the released extractor runs them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vega3d.backbones.checkpoints import WeightsError

#: The published UNet's later parts: dropped at load (the feature is taken before them).
LATER_PARTS = ("middle_block.", "output_blocks.", "out.")


@dataclass(frozen=True)
class SevaConfig:
    in_channels: int = 11  # latent 4 | input mask 1 | Plücker 6
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_levels: int = 3  # MVT at downsampling 1, 2, 4 (not at 8)
    head_dim: int = 64
    context_dim: int = 1024
    dense_in: int = 6
    time_dim: int = 1280  # 4 x model_channels

    @property
    def num_input_blocks(self) -> int:
        levels = len(self.channel_mult)
        return 1 + levels * self.num_res_blocks + levels - 1

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], path) -> "SevaConfig":
        """Channel widths read off the tensor shapes; block counts, head size and levels are SEVA's."""
        default = cls()
        try:
            first = state["input_blocks.0.0.weight"]
            ch = first.shape[0]
            step = default.num_res_blocks + 1  # res blocks + downsample per level
            mult = tuple(state[f"input_blocks.{1 + step * level}.0.in_layers.2.weight"].shape[0] // ch
                         for level in range(len(default.channel_mult)))
            return cls(in_channels=first.shape[1], model_channels=ch, channel_mult=mult,
                       context_dim=state["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"].shape[1],
                       dense_in=state["input_blocks.1.0.dense_emb_layers.0.weight"].shape[1],
                       time_dim=state["time_embed.0.weight"].shape[0])
        except KeyError as error:
            raise WeightsError(f"{path}: not a SEVA/Vmem UNet (no tensor {error.args[0]})") from None


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the activations' dtype, as SEVA's ResBlocks do."""

    def forward(self, x):
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


class CameraResBlock(nn.Module):
    """ResBlock with a FiLM from the Plücker map between the first activation and the first conv."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, dense_in: int):
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(32, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, c_out))
        self.dense_emb_layers = nn.Sequential(nn.Conv2d(dense_in, 2 * c_in, 1))
        self.out_layers = nn.Sequential(GroupNorm32(32, c_out), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip_connection = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[1](self.in_layers[0](x))
        dense = F.interpolate(dense, size=h.shape[-2:], mode="bilinear", align_corners=True)
        scale, shift = self.dense_emb_layers(dense).chunk(2, dim=1)
        h = self.in_layers[2](h * (1 + scale) + shift)
        h = h + self.emb_layers(emb)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)


class TimeMixBlock(nn.Module):
    """Attention over the frames at each pixel: x [(B pixels), T, C] -> ff(LN x) with NO final residual."""

    def __init__(self, dim: int, head_dim: int, context_dim: int):
        from diffusers.models.attention import FeedForward
        from diffusers.models.attention_processor import Attention

        super().__init__()
        heads = dim // head_dim
        self.norm_in, self.ff_in = nn.LayerNorm(dim), FeedForward(dim, activation_fn="geglu")
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention(dim, heads=heads, dim_head=head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, cross_attention_dim=context_dim, heads=heads, dim_head=head_dim)
        self.norm3, self.ff = nn.LayerNorm(dim), FeedForward(dim, activation_fn="geglu")

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.ff_in(self.norm_in(x)) + x
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), encoder_hidden_states=context) + x
        return self.ff(self.norm3(x))


class MultiviewTransformer(nn.Module):
    def __init__(self, dim: int, head_dim: int, context_dim: int):
        from diffusers.models.attention import BasicTransformerBlock

        super().__init__()
        self.norm = nn.GroupNorm(32, dim, eps=1e-6)
        self.proj_in = nn.Linear(dim, dim)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(dim, dim // head_dim, head_dim,
                                                                       cross_attention_dim=context_dim)])
        self.time_mix_blocks = nn.ModuleList([TimeMixBlock(dim, head_dim, context_dim)])
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, num_frames: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        b, s = bt // num_frames, h * w
        tokens = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(bt, s, c))
        spatial = self.transformer_blocks[0](tokens, encoder_hidden_states=context)
        # (b t) s c -> (b s) t c; the time mix attends to the context of each group's first frame.
        per_pixel = spatial.reshape(b, num_frames, s, c).transpose(1, 2).reshape(b * s, num_frames, c)
        first_context = context.reshape(b, num_frames, *context.shape[1:])[:, 0].repeat_interleave(s, dim=0)
        mix = self.time_mix_blocks[0](per_pixel, first_context)
        mix = mix.reshape(b, s, num_frames, c).transpose(1, 2).reshape(bt, s, c)
        out = self.proj_out(spatial + mix)
        return out.reshape(bt, h, w, c).permute(0, 3, 1, 2) + x


class SevaInputBlocks(nn.Module):
    """``time_embed`` + ``input_blocks``: UNet input ``[B*T, 11, h, w]`` -> input block 11 output
    ``[B*T, 4 * model_channels, h/8, w/8]`` (1280 x 14 x 14 from a 112 x 112 latent)."""

    def __init__(self, config: SevaConfig):
        from diffusers.models.downsampling import Downsample2D
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        super().__init__()
        self.config = config
        ch = config.model_channels
        self.time_proj = Timesteps(ch, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(ch, config.time_dim)
        blocks = [nn.ModuleList([nn.Conv2d(config.in_channels, ch, 3, padding=1)])]
        width = ch
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers = [CameraResBlock(width, mult * ch, config.time_dim, config.dense_in)]
                width = mult * ch
                if level < config.attention_levels:
                    layers.append(MultiviewTransformer(width, config.head_dim, config.context_dim))
                blocks.append(nn.ModuleList(layers))
            if level < len(config.channel_mult) - 1:
                blocks.append(nn.ModuleList([Downsample2D(width, use_conv=True, padding=1, name="op")]))
        self.input_blocks = nn.ModuleList(blocks)
        self.out_channels = width

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, dense: torch.Tensor,
                num_frames: int) -> torch.Tensor:
        emb = self.time_embed(self.time_proj(timesteps).to(x.dtype))
        h = x
        for block in self.input_blocks:
            for layer in block:
                if isinstance(layer, CameraResBlock):
                    h = layer(h, emb, dense)
                elif isinstance(layer, MultiviewTransformer):
                    h = layer(h, context, num_frames)
                else:
                    h = layer(h)
        return h


# Published name <-> module name: diffusers' time-embedding MLP and Downsample2D name their tensors differently.
_NAMES = ((r"^time_embed\.0\.", "time_embed.linear_1."), (r"^time_embed\.2\.", "time_embed.linear_2."),
          (r"^(input_blocks\.\d+\.0)\.op\.", r"\1.conv."))
_MODULE_NAMES = ((r"^time_embed\.linear_1\.", "time_embed.0."), (r"^time_embed\.linear_2\.", "time_embed.2."),
                 (r"^(input_blocks\.\d+\.0)\.conv\.", r"\1.op."))


def _rename(state: dict[str, torch.Tensor], rules) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def to_published(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _rename(state, _MODULE_NAMES)


def from_published(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return _rename(state, _NAMES)
