"""Qwen2.5-VL with a VEGA-3D generative branch (paper Sec. 4.3, Alg. 1; VSI-Bench setting).

Only one step of Qwen2.5-VL's own path changes: the video features. ``get_video_features`` runs Qwen's
vision tower as usual, then fuses each video's merged tokens with the frozen generative backbone's
tokens, resampled to the same merged grid and projected to the LLM width. The fused tokens replace the
``<|video_pad|>`` placeholders exactly where Qwen's own tokens would; processor, chat template, M-RoPE and
``generate`` are untouched (``generate`` calls ``get_video_features`` once before prefill and passes
``generative_tokens`` through to it).

Instruction-aware fusion (``instruction_token_gated``): the gate also reads each video's (or image's)
instruction context vector (:func:`vega3d.fusion.build_instruction_context` over its sample's tokens after
the first visual placeholder; with ``labels``, the prompt tokens only). ``forward`` and ``generate`` build
it from ``input_ids`` before the visual features, or take ``instruction_context=[V, D]`` (one row per
video or image).

Frames and Qwen's temporal groups: Qwen2.5-VL patches 2 consecutive frames together (temporal patch 2;
an odd frame count is padded by repeating the last frame, as Qwen's video processor does), then merges
2x2 spatial patches. Temporal group k therefore sees frames 2k and 2k+1; its generative tokens are the
mean of those two frames' tokens (the padded last group: the last frame alone), adaptive-average-pooled
from the backbone's grid to the merged grid (H/28 x W/28 for H x W input pixels).
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.conversion_mapping import WeightRenaming, register_checkpoint_conversion_mapping
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel, Qwen2_5_VLPreTrainedModel

from vega3d.fusion import InstructionVocabulary, build_instruction_context
from vega3d.fusion.instruction import IMAGE_TOKEN_INDEX
from vega3d.models.auto import register_family
from vega3d.models.branch import ADAPTERS, GenerativeBranch
from vega3d.models.qwen_config import MODEL_TYPE, Vega3DQwen2_5_VLConfig
from vega3d.models.settings import CONFIG_KEY, GenerativeSettings


class QwenVisualBranch(GenerativeBranch):
    """What every Qwen-VL host shares: fuse the merged tokens of one visual modality with the branch.

    ``settings.visual_input`` names the modality: ``video`` (paper; a clip is one video of temporal groups
    of 2 frames) or ``images`` (released; every frame an independent image, t = 1). The other modality
    passes through untouched. ``generative_tokens`` is one ``[T, h, w, C]`` tensor per video, or per
    sample for images (its frames are its images, in order).
    """

    def init_qwen_branch(self, config) -> None:
        settings = GenerativeSettings.from_config(config)
        if settings.fusion == "sequence_concat":
            raise ValueError("fusion 'sequence_concat' doubles the visual tokens; Qwen's placeholders take one fused token each")
        self.init_generative_branch(settings, config.text_config.hidden_size)
        #: Template / relation token ids of the instruction context (instruction_token_gated only). Empty: the
        #: plain mean of the question's tokens; set InstructionVocabulary.from_tokenizer(tokenizer) for the
        #: released weighting. Not saved with the checkpoint (it follows from the tokenizer).
        self.instruction_vocabulary = InstructionVocabulary(frozenset(), frozenset())

    def instruction_context(self, input_ids: torch.Tensor, attention_mask=None, labels=None) -> torch.Tensor:
        """``[V, D]``: the instruction context of each fused video (or image) of the batch, in placeholder order."""
        placeholder = (input_ids == self.config.video_token_id) | (input_ids == self.config.image_token_id)
        ids = input_ids.masked_fill(placeholder, IMAGE_TOKEN_INDEX)  # the builder's "image token", never embedded
        contexts = build_instruction_context(ids, self.get_input_embeddings(), self.instruction_vocabulary,
                                             attention_mask=attention_mask, labels=labels)
        fused = input_ids == (self.config.image_token_id if self.generative.visual_input == "images" else self.config.video_token_id)
        starts = fused & ~F.pad(fused[:, :-1], (1, 0), value=False)  # first placeholder of each video / image
        return contexts.repeat_interleave(starts.sum(dim=1), dim=0)

    def context_from_inputs(self, args, kwargs, labels=None) -> torch.Tensor:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise ValueError(f"fusion {self.generative.fusion!r} reads the question: pass input_ids (or instruction_context=)")
        return self.instruction_context(input_ids, kwargs.get("attention_mask"), labels)

    def _init_weights(self, module: nn.Module) -> None:
        if not self.init_adapter_weights(module):
            super()._init_weights(module)

    def fuse_visual_tokens(self, embeds: torch.Tensor, grid_thw, generative_tokens: torch.Tensor, return_gate: bool = False,
                           context: torch.Tensor | None = None):
        """Fuse one video's (or image's) merged Qwen tokens ``[N, D]`` with its generative tokens ``[T, h, w, C]``
        (``context [D]``: its instruction context, for a fusion that reads one)."""
        vision = self.config.vision_config
        frames_per_group = 1 if self.generative.visual_input == "images" else vision.temporal_patch_size
        gen = self.host_grid_tokens(generative_tokens, grid_thw, vision.spatial_merge_size, frames_per_group)
        # One [h*w, D] token grid per temporal group: what grid-aware fusions (cross-attention) expect.
        fused, gate = self.fuse_generative(embeds.reshape(int(grid_thw[0]), -1, embeds.shape[-1]), gen, return_gate=True,
                                           context=context)
        fused = fused.reshape(embeds.shape[0], -1)
        if not return_gate:
            return fused
        return fused, None if gate is None else gate.reshape(embeds.shape[0], *gate.shape[2:])

    def fuse_features(self, outputs, grids, generative_tokens, modality: str, gates: list | None = None, contexts=None):
        """Replace ``outputs.pooler_output`` (one ``[N, D]`` per video or image) by the fused tokens when
        ``modality`` is the branch's; ``gates`` (a list) collects each one's gate; ``contexts`` ``[V, D]``."""
        if modality != self.generative.visual_input:
            return outputs
        if generative_tokens is None:
            raise ValueError(
                f"this model's generative branch fuses {modality}: pass generative_tokens (one [T, h, w, C] tensor per "
                f"{'sample' if modality == 'images' else 'video'}, from backbone {self.generative.backbone!r})"
            )
        if modality == "images":  # per-sample frame stacks -> one single-frame stack per image
            generative_tokens = list(torch.cat(list(generative_tokens)).split(1))
        if len(generative_tokens) != len(outputs.pooler_output):
            raise ValueError(f"got generative tokens for {len(generative_tokens)} {modality}; the batch has {len(outputs.pooler_output)}")
        contexts = [None] * len(generative_tokens) if contexts is None else list(contexts)
        if len(contexts) != len(generative_tokens):
            raise ValueError(f"got {len(contexts)} instruction context(s) for {len(generative_tokens)} {modality}")
        fused, fused_gates = [None] * len(contexts), [None] * len(contexts)
        for members in self._stacks(grids, generative_tokens):
            first = members[0]
            embeds = torch.cat([outputs.pooler_output[k] for k in members])
            gen = torch.cat([generative_tokens[k] for k in members])
            grid = (len(members) * int(grids[first][0]), *(int(x) for x in grids[first][1:]))
            context = contexts[first] if len(members) == 1 or contexts[first] is None else \
                torch.cat([contexts[k].expand(int(grids[k][0]), -1) for k in members])  # one row per temporal group
            tokens, gate = self.fuse_visual_tokens(embeds, grid, gen, return_gate=True, context=context)
            for k, part in zip(members, tokens.split(len(outputs.pooler_output[first]))):
                fused[k] = part
            for k, part in zip(members, [None] * len(members) if gate is None else gate.split(len(outputs.pooler_output[first]))):
                fused_gates[k] = part
        if gates is not None:
            gates.extend(fused_gates)
        outputs.pooler_output = tuple(fused)
        return outputs

    def _stacks(self, grids, generative_tokens) -> list[list[int]]:
        """Videos (images) fused in one call: those of one patch grid and one generative token shape whose
        frames fill whole temporal groups. Stacked, they are one video of all their groups, and every adapter
        acts on each group alone: the same tokens, one call per batch instead of one per video."""
        frames_per_group = 1 if self.generative.visual_input == "images" else self.config.vision_config.temporal_patch_size
        stacks: dict[tuple, list[int]] = {}
        for k, (grid, gen) in enumerate(zip(grids, generative_tokens)):
            key = (tuple(int(x) for x in grid), tuple(gen.shape)) if gen.shape[0] % frames_per_group == 0 else k
            stacks.setdefault(key, []).append(k)
        return list(stacks.values())

    def get_image_features(self, pixel_values, image_grid_thw=None, generative_tokens=None, generative_gates=None,
                           instruction_context=None, **kwargs):
        kwargs["return_dict"] = True
        outputs = super().get_image_features(pixel_values, image_grid_thw, **kwargs)
        return self.fuse_features(outputs, image_grid_thw, generative_tokens, "images", generative_gates, instruction_context)

    def get_video_features(self, pixel_values_videos, video_grid_thw=None, generative_tokens=None, generative_gates=None,
                           instruction_context=None, **kwargs):
        kwargs["return_dict"] = True
        outputs = self.unfused_video_features(pixel_values_videos, video_grid_thw, **kwargs)
        return self.fuse_features(outputs, video_grid_thw, generative_tokens, "video", generative_gates, instruction_context)

    def unfused_video_features(self, pixel_values_videos, video_grid_thw, **kwargs):
        return super().get_video_features(pixel_values_videos, video_grid_thw, **kwargs)

    def forward(self, *args, pixel_values=None, image_grid_thw=None, pixel_values_videos=None, video_grid_thw=None,
                generative_tokens=None, mm_encoder_outputs=None, instruction_context=None, instruction_labels=None, **kwargs):
        fused_input = pixel_values if self.generative.visual_input == "images" else pixel_values_videos
        if generative_tokens is not None and fused_input is None:
            raise ValueError(f"generative_tokens were given but the batch has no {self.generative.visual_input}, which "
                             f"this model's branch fuses (visual_input={self.generative.visual_input!r})")
        mm_encoder_outputs = dict(mm_encoder_outputs or {})
        if fused_input is not None and instruction_context is None and self.fusion.takes_context:
            instruction_context = self.context_from_inputs(args, kwargs, instruction_labels)
        if pixel_values is not None:
            mm_encoder_outputs["image"] = self.get_image_features(pixel_values, image_grid_thw, generative_tokens,
                                                                  instruction_context=instruction_context)
        if pixel_values_videos is not None:
            mm_encoder_outputs["video"] = self.get_video_features(pixel_values_videos, video_grid_thw, generative_tokens,
                                                                  instruction_context=instruction_context)
        return super().forward(*args, image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw,
                               mm_encoder_outputs=mm_encoder_outputs or None, **kwargs)


class Vega3DQwen2_5_VLModel(QwenVisualBranch, Qwen2_5_VLModel):
    """Qwen2.5-VL base model plus the generative projector and fusion (the trained adapters)."""

    config_class = Vega3DQwen2_5_VLConfig

    def __init__(self, config: Qwen2_5_VLConfig):
        config = own_config(Vega3DQwen2_5_VLConfig, config)  # saved under our model_type: Auto classes build this class
        super().__init__(config)
        self.init_qwen_branch(config)


def own_config(config_cls, config):
    """``config`` (a config, a config dict or a checkpoint path) as ``config_cls``: the host's settings under
    the VEGA-3D family's own ``model_type`` (older checkpoints say the host's type and carry a vega3d section)."""
    from transformers import PretrainedConfig

    if isinstance(config, (str, os.PathLike)):
        config = PretrainedConfig.get_config_dict(str(config))[0]
    if isinstance(config, config_cls):
        return config
    values = config.to_dict() if isinstance(config, PretrainedConfig) else dict(config)
    values.pop("model_type", None)
    return config_cls.from_dict(values)


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


class QwenGenerationShell:
    """The ``*ForConditionalGeneration`` side every Qwen-VL host shares (``self.model`` is a QwenVisualBranch).

    Subclasses set ``config_class`` (the family's own config class, its own ``model_type``) and build ``self.model``.
    """

    @property
    def generative(self) -> GenerativeSettings:
        return self.model.generative

    def adapter_parameters(self) -> list[nn.Parameter]:
        return self.model.adapter_parameters()

    def forward_with_instruction_labels(self, *args, labels=None, **kwargs):
        # The instruction context of a training example is its prompt: the model needs the labels to find it.
        return super().forward(*args, labels=labels, instruction_labels=labels, **kwargs)

    def generate(self, *args, **kwargs):
        # generate() computes the visual features before the first forward, from its keyword arguments only:
        # the instruction context must be among them.
        pixels = kwargs.get("pixel_values" if self.generative.visual_input == "images" else "pixel_values_videos")
        if self.model.fusion.takes_context and pixels is not None and kwargs.get("instruction_context") is None:
            kwargs["instruction_context"] = self.model.context_from_inputs(args, kwargs)
        return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, *args, generative_tokens=None, instruction_context=None, **kwargs):
        # generate() gives generative_tokens (and instruction_context) to get_{image,video}_features before
        # prefill and then drops them; naming the arguments here is what lets generate()'s argument check accept them.
        return super().prepare_inputs_for_generation(*args, **kwargs)

    @torch.no_grad()
    def visual_gates(self, pixel_values, grid_thw, generative_tokens, instruction_context=None) -> list[torch.Tensor]:
        """Per-token gate values of each video (or image, for ``visual_input="images"``), ``[t, H/m, W/m]``
        (one map per temporal group); for a channel-level gate, each token's mean over channels.
        ``instruction_context [V, D]``: see ``QwenVisualBranch.instruction_context`` (instruction-aware fusion)."""
        if not self.model.fusion.has_gate:
            raise ValueError(f"fusion {self.generative.fusion!r} computes no gate")
        gates: list = []
        features = self.model.get_image_features if self.generative.visual_input == "images" else self.model.get_video_features
        features(pixel_values, grid_thw, generative_tokens=generative_tokens, generative_gates=gates,
                 instruction_context=instruction_context)
        merge = self.config.vision_config.spatial_merge_size
        maps = []
        for gate, grid in zip(gates, grid_thw):
            if gate.ndim == 2:  # channel-level gate (channel_gated): one value per token = its mean over channels
                gate = gate.mean(dim=-1)
            t, h, w = (int(x) for x in grid)
            maps.append(gate.float().reshape(t, h // merge, w // merge))
        return maps

    def video_gates(self, pixel_values_videos, video_grid_thw, generative_tokens, instruction_context=None) -> list[torch.Tensor]:
        """The kept-stable name of :meth:`visual_gates` (which also serves image-input models)."""
        return self.visual_gates(pixel_values_videos, video_grid_thw, generative_tokens, instruction_context)

    @classmethod
    def from_pretrained(cls, path, *args, **kwargs):
        """Load a VEGA-3D checkpoint (its family's model_type, or an older host-type one with a vega3d section);
        a plain Qwen-VL checkpoint, or weights that do not match the model, are refused with a clear message."""
        config = own_config(cls.config_class, kwargs.pop("config", None) or path)
        GenerativeSettings.from_config(config, source=f"{path}/config.json")
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(path, *args, config=config, output_loading_info=True, **kwargs)
        check_loaded_keys(path, info)
        model.model.generative = model.generative.resolved(path)  # files of the checkpoint (a converted DiT)
        return (model, info) if want_info else model

    @classmethod
    def qwen_config(cls, path, generative: GenerativeSettings):
        """A plain Qwen-VL checkpoint's config, as this family's, with the generative settings added."""
        config = own_config(cls.config_class, path)
        setattr(config, CONFIG_KEY, generative.to_dict())
        return config

    @classmethod
    def from_qwen(cls, path, generative: GenerativeSettings, **kwargs):
        """Attach a new (seeded, untrained) generative branch to a plain Qwen-VL checkpoint (Alg. 1 line 2)."""
        model, info = super().from_pretrained(path, config=cls.qwen_config(path, generative), output_loading_info=True, **kwargs)
        check_loaded_keys(path, info, adapters_stored=False)
        return model


class Vega3DQwen2_5_VLForConditionalGeneration(QwenGenerationShell, Qwen2_5_VLForConditionalGeneration):
    """``Qwen2_5_VLForConditionalGeneration`` whose visual tokens carry the generative branch.

    Call it (and ``generate``) exactly like Qwen2.5-VL, adding ``generative_tokens=[tokens_of_video_0, ...]``.
    """

    config_class = Vega3DQwen2_5_VLConfig

    @functools.wraps(Qwen2_5_VLForConditionalGeneration.forward)  # keeps the signature generate() checks against
    def forward(self, *args, **kwargs):
        return self.forward_with_instruction_labels(*args, **kwargs)

    def __init__(self, config: Qwen2_5_VLConfig):
        config = own_config(Vega3DQwen2_5_VLConfig, config)
        Qwen2_5_VLPreTrainedModel.__init__(self, config)
        self.model = Vega3DQwen2_5_VLModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


def _families() -> dict[str, tuple[type, type]]:
    """model_type -> (plain Qwen-VL class, VEGA-3D class); each VEGA-3D family also answers to its own type."""
    from transformers import Qwen3VLForConditionalGeneration

    from vega3d.models.qwen3_vega import MODEL_TYPE as QWEN3_TYPE
    from vega3d.models.qwen3_vega import Vega3DQwen3VLForConditionalGeneration

    qwen2_5 = (Qwen2_5_VLForConditionalGeneration, Vega3DQwen2_5_VLForConditionalGeneration)
    qwen3 = (Qwen3VLForConditionalGeneration, Vega3DQwen3VLForConditionalGeneration)
    return {"qwen2_5_vl": qwen2_5, MODEL_TYPE: qwen2_5, "qwen3_vl": qwen3, QWEN3_TYPE: qwen3}


def load_model(path: str, generative: GenerativeSettings | None = None):
    """Alg. 1 lines 1-2. A VEGA-3D checkpoint keeps its branch; a plain Qwen-VL (Qwen2.5-VL or Qwen3-VL)
    gets a new one from ``generative`` settings, or stays plain (the baseline without a generative branch)
    when they are None. The released spatial-reasoning checkpoint is loaded directly."""
    from transformers import AutoConfig

    from vega3d.models.released_sr import is_released, load_released

    families = _families()
    config = AutoConfig.from_pretrained(path)
    if config.model_type not in families:
        raise ValueError(f"{path}: model_type {config.model_type!r} is not a supported host ({', '.join(families)})")
    if is_released(config):  # the authors' checkpoint, loaded directly (or `vega3d convert` it once)
        if generative is not None:
            raise ValueError(f"{path} is a released VEGA-3D checkpoint with its own generative branch; remove 'generative'")
        return load_released(path)
    plain, vega = families[config.model_type]
    if getattr(config, CONFIG_KEY, None) is not None:
        model = vega.from_pretrained(path)
        if generative is not None and generative.to_dict() != GenerativeSettings.from_config(config).to_dict():
            raise ValueError(f"{path} already has a generative branch {model.generative.to_dict()}; "
                             f"the config asks for {generative.to_dict()} (remove 'generative' to keep the checkpoint's)")
        return model
    if generative is None:
        model, info = plain.from_pretrained(path, output_loading_info=True)
        check_loaded_keys(path, info)
        return model
    return vega.from_qwen(path, generative)


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
