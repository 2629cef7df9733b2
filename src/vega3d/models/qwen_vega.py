"""Qwen2.5-VL with a VEGA-3D generative branch (paper Sec. 4.3, Alg. 1; VSI-Bench setting).

Only one step of Qwen2.5-VL's own path changes: the video features. ``get_video_features`` runs Qwen's
vision tower as usual, then fuses each video's merged tokens with the frozen generative backbone's
tokens, resampled to the same merged grid and projected to the LLM width. The fused tokens replace the
``<|video_pad|>`` placeholders exactly where Qwen's own tokens would; processor, chat template, M-RoPE and
``generate`` are untouched (``generate`` calls ``get_video_features`` once before prefill and passes
``generative_tokens`` through to it).

Frames and Qwen's temporal groups: Qwen2.5-VL patches 2 consecutive frames together (temporal patch 2;
an odd frame count is padded by repeating the last frame, as Qwen's video processor does), then merges
2x2 spatial patches. Temporal group k therefore sees frames 2k and 2k+1; its generative tokens are the
mean of those two frames' tokens (the padded last group: the last frame alone), adaptive-average-pooled
from the backbone's grid to the merged grid (H/28 x W/28 for H x W input pixels).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.conversion_mapping import WeightRenaming, register_checkpoint_conversion_mapping
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel, Qwen2_5_VLPreTrainedModel

from vega3d.fusion import GenerativeProjector, build_fusion
from vega3d.models.auto import register_family
from vega3d.models.qwen_config import MODEL_TYPE, Vega3DQwen2_5_VLConfig, read_config_dict, vega3d_config
from vega3d.models.settings import CONFIG_KEY, GenerativeSettings

ADAPTERS = ("generative_projector", "fusion")


def resample_to_merged_grid(tokens: torch.Tensor, grid_thw, merge_size: int = 2, temporal_patch_size: int = 2) -> torch.Tensor:
    """Per-frame tokens ``[T, h, w, C]`` -> ``[t * (H/m) * (W/m), C]`` in Qwen's merged-token order.

    ``grid_thw`` is Qwen's patch grid of the video (t temporal groups, H x W patches of 14 px).
    """
    if tokens.ndim != 4:
        raise ValueError(f"generative tokens must be [T, h, w, C]; got shape {tuple(tokens.shape)}")
    t, grid_h, grid_w = (int(x) for x in grid_thw)
    num_frames = tokens.shape[0]
    if -(-num_frames // temporal_patch_size) != t:
        raise ValueError(
            f"frame counts differ between streams: the generative stream has {num_frames} frame(s) but the "
            f"video has {t} temporal group(s) of {temporal_patch_size} frames "
            f"({t * temporal_patch_size - temporal_patch_size + 1}-{t * temporal_patch_size} frames)"
        )
    pad = t * temporal_patch_size - num_frames
    if pad:  # Qwen pads an odd clip by repeating its last frame; so do we
        tokens = torch.cat([tokens, tokens[-1:].expand(pad, *tokens.shape[1:])])
    groups = tokens.reshape(t, temporal_patch_size, *tokens.shape[1:]).mean(dim=1)
    pooled = F.adaptive_avg_pool2d(groups.permute(0, 3, 1, 2), (grid_h // merge_size, grid_w // merge_size))
    return pooled.permute(0, 2, 3, 1).reshape(-1, tokens.shape[-1])


class Vega3DQwen2_5_VLModel(Qwen2_5_VLModel):
    """Qwen2.5-VL base model plus the generative projector and fusion (the trained adapters)."""

    config_class = Vega3DQwen2_5_VLConfig

    def __init__(self, config: Qwen2_5_VLConfig):
        super().__init__(vega3d_config(config))
        self.generative = GenerativeSettings.from_config(config)
        if self.generative.fusion == "sequence_concat":
            raise ValueError("fusion 'sequence_concat' doubles the video tokens; Qwen's placeholders take one fused token each")
        self.generative_projector = self._build_adapter("generative_projector")
        self.fusion = self._build_adapter("fusion")

    def _build_adapter(self, name: str, device: str | None = None) -> nn.Module:
        """A freshly initialised adapter, seeded: used for new models and for checkpoints without adapters."""
        width = self.config.text_config.hidden_size
        with torch.random.fork_rng(devices=[]), torch.device(device) if device else contextlib.nullcontext():
            torch.manual_seed(self.generative.adapter_seed + ADAPTERS.index(name))
            if name == "generative_projector":
                return GenerativeProjector(self.generative.feature_dim, width)
            return build_fusion(self.generative.fusion, width, **self.generative.fusion_options)

    def _init_weights(self, module: nn.Module) -> None:
        # Adapters keep their own seeded, module-defined initialisation rather than Qwen's normal(0.02): the
        # residual gate's scale or a gate bias would otherwise be lost when missing weights are materialised.
        for name in ADAPTERS:
            adapter = getattr(self, name, None)
            prefix = next((key for key, child in (adapter.named_modules() if adapter else []) if child is module), None)
            if prefix is None:
                continue
            fresh = self._build_adapter(name, device="cpu").get_submodule(prefix)  # real tensors in a meta-device load
            with torch.no_grad():
                for target, source in zip(module.parameters(recurse=False), fresh.parameters(recurse=False)):
                    target.copy_(source)
            return
        super()._init_weights(module)

    def fuse_video_tokens(
        self, video_embeds: torch.Tensor, grid_thw, generative_tokens: torch.Tensor, return_gate: bool = False
    ):
        """Fuse one video's merged Qwen tokens ``[N, D]`` with its generative tokens ``[T, h, w, C]``."""
        merge = self.config.vision_config.spatial_merge_size
        gen = resample_to_merged_grid(generative_tokens, grid_thw, merge, self.config.vision_config.temporal_patch_size)
        if gen.shape[-1] != self.generative.feature_dim:
            raise ValueError(
                f"generative tokens have {gen.shape[-1]} channels; this model's generative branch expects "
                f"{self.generative.feature_dim} (backbone {self.generative.backbone!r})"
            )
        projector_dtype = next(self.generative_projector.parameters()).dtype
        gen = self.generative_projector(gen.to(video_embeds.device, projector_dtype))
        # One [h*w, D] token grid per temporal group: what grid-aware fusions (cross-attention) expect.
        t, grid_h, grid_w = (int(x) for x in grid_thw)
        per_group = (t, (grid_h // merge) * (grid_w // merge), -1)
        fused, gate = self.fusion(video_embeds.to(gen.dtype).reshape(per_group), gen.reshape(per_group), return_gate=True)
        fused = fused.reshape(video_embeds.shape[0], -1)
        if not return_gate:
            return fused
        return fused, None if gate is None else gate.reshape(video_embeds.shape[0], *gate.shape[2:])

    def get_video_features(self, pixel_values_videos, video_grid_thw=None, generative_tokens=None, **kwargs):
        kwargs["return_dict"] = True
        outputs = super().get_video_features(pixel_values_videos, video_grid_thw, **kwargs)
        if generative_tokens is None:
            raise ValueError(
                "this model has a generative branch: pass generative_tokens (one [T, h, w, C] tensor per video, "
                f"from backbone {self.generative.backbone!r}) with the video"
            )
        if len(generative_tokens) != len(outputs.pooler_output):
            raise ValueError(f"got generative tokens for {len(generative_tokens)} video(s); the batch has {len(outputs.pooler_output)}")
        outputs.pooler_output = tuple(
            self.fuse_video_tokens(embeds, grid, gen)
            for embeds, grid, gen in zip(outputs.pooler_output, video_grid_thw, generative_tokens)
        )
        return outputs

    def forward(self, *args, pixel_values_videos=None, video_grid_thw=None, generative_tokens=None, mm_encoder_outputs=None, **kwargs):
        if pixel_values_videos is not None:
            mm_encoder_outputs = dict(mm_encoder_outputs or {})
            mm_encoder_outputs["video"] = self.get_video_features(pixel_values_videos, video_grid_thw, generative_tokens)
        return super().forward(*args, video_grid_thw=video_grid_thw, mm_encoder_outputs=mm_encoder_outputs, **kwargs)


class Vega3DQwen2_5_VLForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """``Qwen2_5_VLForConditionalGeneration`` whose video tokens carry the generative branch.

    Call it (and ``generate``) exactly like Qwen2.5-VL, adding ``generative_tokens=[tokens_of_video_0, ...]``.
    """

    config_class = Vega3DQwen2_5_VLConfig

    def __init__(self, config: Qwen2_5_VLConfig):
        config = vega3d_config(config)  # saved under our model_type, so Auto classes build this class
        Qwen2_5_VLPreTrainedModel.__init__(self, config)
        self.model = Vega3DQwen2_5_VLModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    @property
    def generative(self) -> GenerativeSettings:
        return self.model.generative

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for name in ADAPTERS for p in getattr(self.model, name).parameters()]

    def prepare_inputs_for_generation(self, *args, generative_tokens=None, **kwargs):
        # generate() gives generative_tokens to get_video_features before prefill and then drops them; naming
        # the argument here is what lets generate()'s argument check accept it.
        return super().prepare_inputs_for_generation(*args, **kwargs)

    @torch.no_grad()
    def video_gates(self, pixel_values_videos, video_grid_thw, generative_tokens) -> list[torch.Tensor]:
        """Per-token gate values of each video, ``[t, H/m, W/m]`` (one map per temporal group of 2 frames);
        for a channel-level gate, each token's mean over channels."""
        videos = super(Vega3DQwen2_5_VLModel, self.model).get_video_features(pixel_values_videos, video_grid_thw, return_dict=True)
        merge = self.config.vision_config.spatial_merge_size
        gates = []
        for embeds, grid, gen in zip(videos.pooler_output, video_grid_thw, generative_tokens):
            _, gate = self.model.fuse_video_tokens(embeds, grid, gen, return_gate=True)
            if gate is None:
                raise ValueError(f"fusion {self.generative.fusion!r} computes no gate")
            if gate.ndim == 2:  # channel-level gate (channel_gated): one value per token = its mean over channels
                gate = gate.mean(dim=-1)
            t, h, w = (int(x) for x in grid)
            gates.append(gate.float().reshape(t, h // merge, w // merge))
        return gates

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs):
        """Load a VEGA-3D checkpoint (model_type vega3d_qwen2_5_vl, or an older qwen2_5_vl one with a vega3d
        section); a plain Qwen2.5-VL checkpoint, or weights that do not match the model, are refused."""
        config = vega3d_config(kwargs.pop("config", None) or read_config_dict(path))
        GenerativeSettings.from_config(config, source=f"{path}/config.json")
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(path, *args, config=config, output_loading_info=True, **kwargs)
        check_loaded_keys(path, info)
        return (model, info) if want_info else model

    @classmethod
    def from_qwen(cls, path, generative: GenerativeSettings, **kwargs) -> "Vega3DQwen2_5_VLForConditionalGeneration":
        """Attach a new (seeded, untrained) generative branch to a plain Qwen2.5-VL checkpoint (Alg. 1 line 2)."""
        config = vega3d_config(read_config_dict(path))
        setattr(config, CONFIG_KEY, generative.to_dict())
        model, info = super().from_pretrained(path, config=config, output_loading_info=True, **kwargs)
        check_loaded_keys(path, info, adapters_stored=False)
        return model


def check_loaded_keys(path, info: dict, adapters_stored: bool = True) -> None:
    """Every LLM and vision weight comes from the checkpoint and every stored weight is used; else an error
    (transformers only logs it, and the run would go on with random weights)."""
    adapter = [k for k in info["missing_keys"] if any(k.startswith(f"model.{a}.") for a in ADAPTERS)]
    if adapters_stored and adapter:
        raise ValueError(f"{path}: the config has generative settings but the weights lack the adapters {sorted(adapter)[:4]}")
    missing, unexpected = sorted(set(info["missing_keys"]) - set(adapter)), sorted(info["unexpected_keys"])
    if missing or unexpected:
        raise ValueError(f"{path}: the weights do not match the model: missing {missing[:4]} ({len(missing)}), "
                         f"unexpected {unexpected[:4]} ({len(unexpected)})")


def load_model(path: str, generative: GenerativeSettings | None = None):
    """Alg. 1 lines 1-2. A VEGA-3D checkpoint keeps its branch; a plain Qwen2.5-VL gets a new one from
    ``generative`` settings, or stays plain (the baseline without a generative branch) when they are None."""
    values = read_config_dict(path)
    has_branch = values.get("model_type") == MODEL_TYPE or values.get(CONFIG_KEY) is not None
    if has_branch:
        model = Vega3DQwen2_5_VLForConditionalGeneration.from_pretrained(path)
        if generative is not None and generative.to_dict() != model.generative.to_dict():
            raise ValueError(f"{path} already has a generative branch {model.generative.to_dict()}; "
                             f"the config asks for {generative.to_dict()} (remove 'generative' to keep the checkpoint's)")
        return model
    if generative is None:
        model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, output_loading_info=True)
        check_loaded_keys(path, info)
        return model
    return Vega3DQwen2_5_VLForConditionalGeneration.from_qwen(path, generative)


# Checkpoints are stored in Qwen's hub layout ("model.layers", "visual"); the stock renaming would also
# move our adapters under the language model, so this class gets the same renaming with them excluded.
register_checkpoint_conversion_mapping(
    Vega3DQwen2_5_VLForConditionalGeneration.__name__,
    [
        WeightRenaming(source_patterns=r"^visual", target_patterns="model.visual"),
        WeightRenaming(
            source_patterns=r"^model(?!\.(language_model|visual|generative_projector|fusion))",
            target_patterns="model.language_model",
        ),
    ],
)
register_family(MODEL_TYPE, Vega3DQwen2_5_VLConfig, Vega3DQwen2_5_VLForConditionalGeneration)
