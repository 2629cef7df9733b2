"""Qwen2.5-VL with a VEGA-3D generative branch (paper Sec. 4.3, Alg. 1; VSI-Bench setting).

Only one step of Qwen2.5-VL's own path changes: the video features. ``get_video_features`` runs Qwen's
vision tower as usual, then fuses each video's merged tokens with the frozen generative backbone's
tokens, resampled to the same merged grid and projected to the LLM width. The fused tokens replace the
``<|video_pad|>`` placeholders exactly where Qwen's own tokens would; processor, chat template, M-RoPE and
``generate`` are untouched (``generate`` calls ``get_video_features`` once before prefill and passes
``generative_tokens`` through to it).

Instruction-aware fusion (``instruction_token_gated``): the gate also reads each video's instruction context
vector (:func:`vega3d.fusion.build_instruction_context` over the sample's tokens after its first video
placeholder; with ``labels``, the prompt tokens only). ``forward`` and ``generate`` build it from
``input_ids`` before the video features, or take ``instruction_context=[V, D]`` (one row per video).

Frames and Qwen's temporal groups: Qwen2.5-VL patches 2 consecutive frames together (temporal patch 2;
an odd frame count is padded by repeating the last frame, as Qwen's video processor does), then merges
2x2 spatial patches. Temporal group k therefore sees frames 2k and 2k+1; its generative tokens are the
mean of those two frames' tokens (the padded last group: the last frame alone), adaptive-average-pooled
from the backbone's grid to the merged grid (H/28 x W/28 for H x W input pixels).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.conversion_mapping import WeightRenaming, register_checkpoint_conversion_mapping
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel, Qwen2_5_VLPreTrainedModel

from vega3d.fusion import InstructionVocabulary, build_instruction_context
from vega3d.fusion.instruction import IMAGE_TOKEN_INDEX
from vega3d.models.branch import ADAPTERS, GenerativeBranch, resample_to_merged_grid
from vega3d.models.auto import register_family
from vega3d.models.qwen_config import MODEL_TYPE, Vega3DQwen2_5_VLConfig, read_config_dict, vega3d_config
from vega3d.models.settings import CONFIG_KEY, GenerativeSettings


class Vega3DQwen2_5_VLModel(GenerativeBranch, Qwen2_5_VLModel):
    """Qwen2.5-VL base model plus the generative projector and fusion (the trained adapters)."""

    config_class = Vega3DQwen2_5_VLConfig

    def __init__(self, config: Qwen2_5_VLConfig):
        config = vega3d_config(config)  # saved under our model_type, so Auto classes build this class
        super().__init__(config)
        settings = GenerativeSettings.from_config(config)
        if settings.fusion == "sequence_concat":
            raise ValueError("fusion 'sequence_concat' doubles the video tokens; Qwen's placeholders take one fused token each")
        self.init_generative_branch(settings, config.text_config.hidden_size)
        #: Template / relation token ids of the instruction context (instruction_token_gated only). Empty: the
        #: plain mean of the question's tokens; set InstructionVocabulary.from_tokenizer(tokenizer) for the
        #: released weighting. Not saved with the checkpoint (it follows from the tokenizer).
        self.instruction_vocabulary = InstructionVocabulary(frozenset(), frozenset())

    def _init_weights(self, module: nn.Module) -> None:
        if not self.init_adapter_weights(module):
            super()._init_weights(module)

    def instruction_context(self, input_ids: torch.Tensor, attention_mask=None, labels=None) -> torch.Tensor:
        """``[V, D]``: the instruction context of each video of the batch (its sample's), in placeholder order."""
        placeholder = (input_ids == self.config.video_token_id) | (input_ids == self.config.image_token_id)
        ids = input_ids.masked_fill(placeholder, IMAGE_TOKEN_INDEX)  # the builder's "image token", never embedded
        contexts = build_instruction_context(ids, self.get_input_embeddings(), self.instruction_vocabulary,
                                             attention_mask=attention_mask, labels=labels)
        video = input_ids == self.config.video_token_id
        starts = video & ~F.pad(video[:, :-1], (1, 0), value=False)  # first placeholder of each video
        return contexts.repeat_interleave(starts.sum(dim=1), dim=0)

    def fuse_video_tokens(
        self, video_embeds: torch.Tensor, grid_thw, generative_tokens: torch.Tensor, return_gate: bool = False,
        context: torch.Tensor | None = None,
    ):
        """Fuse one video's merged Qwen tokens ``[N, D]`` with its generative tokens ``[T, h, w, C]``
        (``context [D]``: its instruction context, for a fusion that reads one)."""
        merge = self.config.vision_config.spatial_merge_size
        gen = resample_to_merged_grid(generative_tokens, grid_thw, merge, self.config.vision_config.temporal_patch_size)
        # One [h*w, D] token grid per temporal group: what grid-aware fusions (cross-attention) expect.
        groups = int(grid_thw[0])
        fused, gate = self.fuse_generative(video_embeds.reshape(groups, -1, video_embeds.shape[-1]), gen, return_gate=True,
                                           context=context)
        fused = fused.reshape(video_embeds.shape[0], -1)
        if not return_gate:
            return fused
        return fused, None if gate is None else gate.reshape(video_embeds.shape[0], *gate.shape[2:])

    def get_video_features(self, pixel_values_videos, video_grid_thw=None, generative_tokens=None, instruction_context=None,
                           **kwargs):
        kwargs["return_dict"] = True
        outputs = super().get_video_features(pixel_values_videos, video_grid_thw, **kwargs)
        if generative_tokens is None:
            raise ValueError(
                "this model has a generative branch: pass generative_tokens (one [T, h, w, C] tensor per video, "
                f"from backbone {self.generative.backbone!r}) with the video"
            )
        if len(generative_tokens) != len(outputs.pooler_output):
            raise ValueError(f"got generative tokens for {len(generative_tokens)} video(s); the batch has {len(outputs.pooler_output)}")
        contexts = [None] * len(generative_tokens) if instruction_context is None else list(instruction_context)
        if len(contexts) != len(generative_tokens):
            raise ValueError(f"got {len(contexts)} instruction context(s) for {len(generative_tokens)} video(s)")
        outputs.pooler_output = tuple(
            self.fuse_video_tokens(embeds, grid, gen, context=context)
            for embeds, grid, gen, context in zip(outputs.pooler_output, video_grid_thw, generative_tokens, contexts)
        )
        return outputs

    def forward(self, *args, pixel_values_videos=None, video_grid_thw=None, generative_tokens=None, mm_encoder_outputs=None,
                instruction_context=None, instruction_labels=None, **kwargs):
        if pixel_values_videos is not None:
            if instruction_context is None and self.fusion.takes_context:
                instruction_context = self._context_from_inputs(args, kwargs, instruction_labels)
            mm_encoder_outputs = dict(mm_encoder_outputs or {})
            mm_encoder_outputs["video"] = self.get_video_features(pixel_values_videos, video_grid_thw, generative_tokens,
                                                                  instruction_context)
        return super().forward(*args, video_grid_thw=video_grid_thw, mm_encoder_outputs=mm_encoder_outputs, **kwargs)

    def _context_from_inputs(self, args, kwargs, labels=None) -> torch.Tensor:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:
            raise ValueError(f"fusion {self.generative.fusion!r} reads the question: pass input_ids (or instruction_context=)")
        return self.instruction_context(input_ids, kwargs.get("attention_mask"), labels)


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
        return self.model.adapter_parameters()

    @functools.wraps(Qwen2_5_VLForConditionalGeneration.forward)  # keeps the signature generate() checks against
    def forward(self, *args, labels=None, **kwargs):
        # The instruction context of a training example is its prompt: the model needs the labels to find it.
        return super().forward(*args, labels=labels, instruction_labels=labels, **kwargs)

    def generate(self, *args, **kwargs):
        # generate() computes the video features before the first forward, from its keyword arguments only:
        # the instruction context must be among them.
        if (self.model.fusion.takes_context and kwargs.get("pixel_values_videos") is not None
                and kwargs.get("instruction_context") is None):
            kwargs["instruction_context"] = self.model._context_from_inputs(args, kwargs)
        return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, *args, generative_tokens=None, instruction_context=None, **kwargs):
        # generate() gives generative_tokens (and instruction_context) to get_video_features before prefill and
        # then drops them; naming the arguments here is what lets generate()'s argument check accept them.
        return super().prepare_inputs_for_generation(*args, **kwargs)

    @torch.no_grad()
    def video_gates(self, pixel_values_videos, video_grid_thw, generative_tokens, instruction_context=None) -> list[torch.Tensor]:
        """Per-token gate values of each video, ``[t, H/m, W/m]`` (one map per temporal group of 2 frames);
        for a channel-level gate, each token's mean over channels. ``instruction_context [V, D]``: see
        ``Vega3DQwen2_5_VLModel.instruction_context`` (instruction-aware fusion only)."""
        videos = super(Vega3DQwen2_5_VLModel, self.model).get_video_features(pixel_values_videos, video_grid_thw, return_dict=True)
        merge = self.config.vision_config.spatial_merge_size
        gates = []
        contexts = [None] * len(generative_tokens) if instruction_context is None else list(instruction_context)
        for embeds, grid, gen, context in zip(videos.pooler_output, video_grid_thw, generative_tokens, contexts):
            _, gate = self.model.fuse_video_tokens(embeds, grid, gen, return_gate=True, context=context)
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
