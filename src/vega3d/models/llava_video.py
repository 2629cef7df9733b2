"""LLaVA-Video (Video-3D LLM) with the VEGA-3D generative branch: the paper's 3D scene-understanding model.

Built on transformers' LLaVA-OneVision classes (SigLIP tower, projector, ``image_newline``, Qwen2) with the
released model's own video merge (REFERENCE-3D facts 11-14), per sample of ``V`` frames:

  SigLIP (26 layers, ``hidden_states[-1]``) -> projector -> ``patches`` [V, 27*27, D]   (object features read these)
  -> bilinear pooling 27x27 -> 14x14 -> fusion with the generative tokens on that grid (``GenerativeBranch``;
  none in the Video-3D LLM baseline) -> + 3-D world-position code of each token -> one ``image_newline`` after
  every row: V * 14 * 15 tokens (6,720 for 32 frames).

``sequence_concat`` lays the projected generative tokens of the whole video, with their own row newlines,
after the semantic ones (fact 47). The visual tokens replace the prompt's ``IMAGE_PLACEHOLDER`` (-200,
fact 12) with label -100; ``<coord>`` tokens get the position code of their box centre added (fact 29);
the hidden state at ``<ground>`` queries the grounding head (models/grounding.py). The frozen generative
backbone is never part of the model: pass its tokens (``[V, h, w, C]`` per sample).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
from transformers.modeling_outputs import ModelOutput
from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel

from vega3d.fusion import InstructionVocabulary, build_instruction_context, world_position_code
from vega3d.fusion.position import pool_world_coordinates
from vega3d.models import llava_layouts
from vega3d.models.auto import register_family
from vega3d.models.branch import ADAPTERS, GenerativeBranch, resample_tokens, restore_own_init
from vega3d.models.convert import LAYOUTS, checkpoint_keys, detect_layout
from vega3d.models.grounding import build_grounding_head, object_features
from vega3d.models.llava_prompts import COORD_TOKEN, GROUND_TOKEN, IGNORE_INDEX, IMAGE_PLACEHOLDER
from vega3d.models.settings import GenerativeSettings
from vega3d.scenes import resize_frames

COORDINATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
IMAGE_MEAN = IMAGE_STD = 0.5  # the released SigLIP processor (fact 7), not transformers' CLIP statistics


def video_inputs(frames: torch.Tensor, world: torch.Tensor, image_size: int = 384) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's model inputs, VEGA's ``resize`` mode (fact 6): frames ``[V, 3, H, W]`` in [0, 1] resized
    (bicubic) to ``image_size`` and normalised with mean = std = 0.5; per-pixel world coordinates
    ``[V, Hd, Wd, 3]`` resized with nearest neighbours (OpenCV's ``INTER_NEAREST`` rule)."""
    pixels = (resize_frames(frames, (image_size, image_size), mode="bicubic") - IMAGE_MEAN) / IMAGE_STD
    coords = F.interpolate(world.permute(0, 3, 1, 2), size=(image_size, image_size), mode="nearest")
    return pixels, coords.permute(0, 2, 3, 1)


@strict
class Vega3DLlavaVideoConfig(LlavaOnevisionConfig):
    """LLaVA-OneVision's config plus what the 3D model records: the generative settings (``vega3d``; None =
    Video-3D LLM baseline), the grounding head (``grounding``: ``{"seed", "patch_min_fraction"}``; None = no
    head), the ``<ground>``/``<coord>`` token ids, the dtype of the coordinate arithmetic (``bfloat16`` = the
    released run, fact 8) and the sequence limit (fact 12)."""

    model_type = llava_layouts.MODEL_TYPE
    vega3d: dict | None = None
    grounding: dict | None = None
    ground_token_id: int | None = None
    coord_token_id: int | None = None
    coordinate_dtype: str = "float32"
    max_length: int = 32768
    random_weights: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.coordinate_dtype not in COORDINATE_DTYPES:
            raise ValueError(f"coordinate_dtype must be one of {', '.join(COORDINATE_DTYPES)}; got {self.coordinate_dtype!r}")


@dataclass
class Vega3DLlavaVideoOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: object | None = None
    hidden_states: tuple | None = None
    #: Per sample: ``[N + 1]`` proposal scores (zero-target last), or None where the sample did not ground.
    grounding_scores: list | None = None


class Vega3DLlavaVideoModel(GenerativeBranch, LlavaOnevisionModel):
    """LLaVA-OneVision's modules, this model's video merge, and (optionally) the generative adapters."""

    config_class = Vega3DLlavaVideoConfig

    def __init__(self, config: Vega3DLlavaVideoConfig):
        super().__init__(config)
        self.generative = None
        if config.vega3d is not None:
            self.init_generative_branch(GenerativeSettings.from_dict(config.vega3d, "config 'vega3d'"), config.text_config.hidden_size)
        #: Template / relation token ids of the instruction context (instruction_token_gated only): empty = the
        #: plain mean of the question's tokens; InstructionVocabulary.from_tokenizer(tokenizer) for the released one.
        self.instruction_vocabulary = InstructionVocabulary(frozenset(), frozenset())

    def _init_weights(self, module: nn.Module) -> None:
        if getattr(self, "generative", None) is None or not self.init_adapter_weights(module):
            super()._init_weights(module)

    @property
    def grid(self) -> tuple[int, int]:
        side = -(-(self.config.vision_config.image_size // self.config.vision_config.patch_size) // 2)
        return side, side

    def encode_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[V, 3, H, W]`` (normalised, mean = std = 0.5) -> projected patches ``[V, 27*27, D]`` (fact 11 a-b)."""
        hidden = self.vision_tower(pixels.to(self.dtype), output_hidden_states=True).hidden_states[-1]
        return self.multi_modal_projector(hidden)

    def visual_tokens(self, patches: torch.Tensor, world: torch.Tensor, generative_tokens=None, context=None) -> torch.Tensor:
        """One sample's visual tokens ``[V * h * (w + 1), D]`` (twice as many for ``sequence_concat``);
        ``context`` ``[D]``: the sample's instruction context, for a fusion that reads one."""
        grid, frames = self.grid, patches.shape[0]
        streams = [self.apply_pooling(patches)]  # bilinear 27x27 -> 14x14 (fact 11 c)
        if self.generative is not None:
            if generative_tokens is None:
                raise ValueError(f"this model has a generative branch: pass generative_tokens ([V, h, w, C] per sample, "
                                 f"from backbone {self.generative.backbone!r})")
            if generative_tokens.shape[0] != frames:
                raise ValueError(f"generative tokens have {generative_tokens.shape[0]} frames; the video has {frames}")
            fused = self.fuse_generative(streams[0], resample_tokens(generative_tokens, grid), context=context)
            streams = list(fused.split(grid[0] * grid[1], dim=1))  # sequence_concat: [semantic, generative]
        coords = pool_world_coordinates(world.to(COORDINATE_DTYPES[self.config.coordinate_dtype]),
                                        self.config.vision_config.patch_size, grid)
        if coords.shape[0] != frames:
            raise ValueError(f"world coordinates have {coords.shape[0]} frames; the video has {frames}")
        code = world_position_code(coords, patches.shape[-1]).reshape(frames, -1, patches.shape[-1])
        newline = self.image_newline.to(patches.dtype).expand(frames, grid[0], 1, -1)
        rows = [torch.cat([(s + code.to(s.dtype)).reshape(frames, *grid, -1), newline], dim=2) for s in streams]
        return torch.cat([r.reshape(-1, patches.shape[-1]) for r in rows])


class Vega3DLlavaVideoForConditionalGeneration(LlavaOnevisionForConditionalGeneration):
    """The 3D model: call it with what a trainer gives, per sample (lists of length B, or batched tensors):

    ``input_ids``/``attention_mask``/``labels`` [B, L] with one ``IMAGE_PLACEHOLDER`` per sample (models.llava_prompts),
    ``pixel_values_videos`` [V, 3, H, W], ``world_coords`` [V, H, W, 3] (metres, per pixel), ``generative_tokens``
    [V, h, w, C], ``boxes`` [N, 6] proposals (grounding samples), ``object_labels`` (indices of the referred
    proposals; empty = none), ``coord_boxes`` [6] or None (Scan2Cap's ``<coord>`` box). An instruction-aware
    fusion (``instruction_token_gated``) gets each sample's context from its tokens (``build_instruction_context``
    over the prompt; with ``labels``, the prompt tokens only), or ``instruction_context`` [B, D].
    Grounding samples contribute the InfoNCE loss only (fact 24), the others the LM loss.
    """

    config_class = Vega3DLlavaVideoConfig
    _tied_weights_keys = {}

    def __init__(self, config: Vega3DLlavaVideoConfig):
        super(LlavaOnevisionForConditionalGeneration, self).__init__(config)
        self.model = Vega3DLlavaVideoModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        if config.grounding is not None:
            self.grounding_head = build_grounding_head(config.text_config.hidden_size, config.grounding.get("seed", 0))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        fresh_head = lambda: build_grounding_head(self.config.text_config.hidden_size, self.config.grounding.get("seed", 0))  # noqa: E731
        if restore_own_init(module, getattr(self, "grounding_head", None), fresh_head):
            return
        if self.model.generative is not None and self.model.init_adapter_weights(module):
            return
        super()._init_weights(module)

    @property
    def generative(self) -> GenerativeSettings | None:
        return self.model.generative

    # ----------------------------------------------------------------------------------------- inputs
    def multimodal_embeddings(self, input_ids, attention_mask=None, labels=None, pixel_values_videos=None,
                              world_coords=None, generative_tokens=None, coord_boxes=None, instruction_context=None,
                              padding_side="right"):
        """Splice each sample's visual tokens into its text embeddings (fact 12): returns ``inputs_embeds``,
        ``attention_mask``, ``labels``, ``position_ids``, the per-sample ``patches`` and the position of the
        last ``<ground>`` token (or None) of each sample."""
        batch = len(input_ids)
        embed, width = self.get_input_embeddings(), self.config.text_config.hidden_size
        if instruction_context is None and getattr(getattr(self.model, "fusion", None), "takes_context", False):
            instruction_context = build_instruction_context(input_ids, embed, self.model.instruction_vocabulary,
                                                            attention_mask=attention_mask, labels=labels)
        sequences, targets, patches, queries = [], [], [], []
        for b in range(batch):
            ids = input_ids[b] if attention_mask is None else input_ids[b][attention_mask[b].bool()]
            target = None if labels is None else (labels[b] if attention_mask is None else labels[b][attention_mask[b].bool()])
            text = embed(ids.clamp_min(0))
            coord = self.config.coord_token_id
            if coord is not None and (ids == coord).any():
                box = None if coord_boxes is None else coord_boxes[b]
                if box is None:
                    raise ValueError(f"sample {b} has a {COORD_TOKEN} token but no coord box (a null box means an empty caption)")
                centre = torch.as_tensor(box, device=text.device)[:3].to(COORDINATE_DTYPES[self.config.coordinate_dtype])
                text = text + (ids == coord)[:, None] * world_position_code(centre, width).to(text.dtype)
            places = (ids == IMAGE_PLACEHOLDER).nonzero().flatten().tolist()
            if len(places) > 1:
                raise ValueError(f"sample {b} has {len(places)} image placeholders; one video per sample")
            sample_patches = None
            if places:
                p = places[0]
                sample_patches = self.model.encode_frames(pixel_values_videos[b])
                visual = self.model.visual_tokens(sample_patches, world_coords[b],
                                                  None if generative_tokens is None else generative_tokens[b],
                                                  None if instruction_context is None else instruction_context[b])
                text = torch.cat([text[:p], visual.to(text.dtype), text[p + 1:]])
                ids = torch.cat([ids[:p], ids.new_full((len(visual),), IMAGE_PLACEHOLDER), ids[p + 1:]])
                if target is not None:
                    target = torch.cat([target[:p], target.new_full((len(visual),), IGNORE_INDEX), target[p + 1:]])
            text, ids = text[:self.config.max_length], ids[:self.config.max_length]
            ground = (ids == self.config.ground_token_id).nonzero().flatten() if self.config.ground_token_id is not None else []
            sequences.append(text)
            targets.append(None if target is None else target[:self.config.max_length])
            patches.append(sample_patches)
            queries.append(int(ground[-1]) if len(ground) else None)
        longest = max(len(s) for s in sequences)
        embeds = sequences[0].new_zeros(batch, longest, width)
        mask = torch.zeros(batch, longest, dtype=torch.long, device=embeds.device)
        out_labels = None if labels is None else torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long, device=embeds.device)
        for b, seq in enumerate(sequences):
            span = slice(0, len(seq)) if padding_side == "right" else slice(longest - len(seq), longest)
            embeds[b, span], mask[b, span] = seq, 1
            if out_labels is not None:
                out_labels[b, span] = targets[b]
            if padding_side == "left" and queries[b] is not None:
                queries[b] += longest - len(seq)
        position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
        return embeds, mask, out_labels, position_ids, patches, queries

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, input_ids=None, attention_mask=None, labels=None, pixel_values_videos=None, world_coords=None,
                generative_tokens=None, boxes=None, object_labels=None, coord_boxes=None, instruction_context=None, inputs_embeds=None,
                position_ids=None, past_key_values=None, use_cache=None, logits_to_keep=0, **kwargs):
        patches, queries = None, None
        items = kwargs.pop("num_items_in_batch", None)  # from the HF Trainer, for the LM loss only
        # The trainer's count of grounding samples in the whole optimiser step (all ranks, all micro-batches):
        # the InfoNCE loss is then a sum over this batch divided by it, like the LM loss by num_items_in_batch.
        groundings = kwargs.pop("num_groundings_in_batch", None)
        if pixel_values_videos is not None:
            inputs_embeds, attention_mask, labels, position_ids, patches, queries = self.multimodal_embeddings(
                input_ids, attention_mask, labels, pixel_values_videos, world_coords, generative_tokens, coord_boxes, instruction_context)
            input_ids = None
        outputs = self.model.language_model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                            position_ids=position_ids, past_key_values=past_key_values,
                                            use_cache=use_cache, **kwargs)
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])
        scores = self.grounding_scores(hidden, patches, queries, world_coords, boxes) if boxes is not None else None
        losses = []
        if labels is not None:
            if scores is not None:  # grounding samples train the head only (fact 24)
                labels = labels.clone()
                labels[[b for b, s in enumerate(scores) if s is not None]] = IGNORE_INDEX
            if (labels[:, 1:] != IGNORE_INDEX).any():
                losses.append(self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size,
                                                 num_items_in_batch=items))
        grounded = [(s, object_labels[b]) for b, s in enumerate(scores or []) if s is not None and object_labels is not None]
        if grounded:
            terms = torch.stack([self.grounding_head.loss(s, positives) for s, positives in grounded])
            losses.append(terms.mean() if groundings is None else terms.sum() / groundings)
        loss = torch.stack(losses).sum() if losses else None
        return Vega3DLlavaVideoOutput(loss=loss, logits=logits, past_key_values=outputs.past_key_values,
                                      hidden_states=outputs.hidden_states, grounding_scores=scores)

    def grounding_scores(self, hidden, patches, queries, world_coords, boxes) -> list:
        if getattr(self, "grounding_head", None) is None:
            raise ValueError("boxes were given but this model has no grounding head (config 'grounding' is None)")
        fraction = self.config.grounding.get("patch_min_fraction", 0.5)
        scores = []
        for b, query in enumerate(queries or [None] * len(hidden)):
            if query is None or boxes[b] is None or patches[b] is None:
                scores.append(None)
                continue
            box = torch.as_tensor(boxes[b], device=hidden.device)
            world = world_coords[b].to(COORDINATE_DTYPES[self.config.coordinate_dtype])
            objects = object_features(patches[b], world, box, self.config.vision_config.patch_size, fraction)
            scores.append(self.grounding_head.scores(objects, hidden[b, query]))
        return scores

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, pixel_values_videos=None, world_coords=None,
                 generative_tokens=None, coord_boxes=None, instruction_context=None, **generation_options):
        """Greedy/beam generation from a multimodal prompt (left padding); returns the new tokens only."""
        embeds, mask, _, _, _, _ = self.multimodal_embeddings(input_ids, attention_mask, None, pixel_values_videos,
                                                              world_coords, generative_tokens, coord_boxes, instruction_context,
                                                              padding_side="left")
        return super().generate(inputs_embeds=embeds, attention_mask=mask, **generation_options)

    # ------------------------------------------------------------------------------ tokens and loading
    def add_location_tokens(self, tokenizer) -> dict[str, int]:
        """Fact 20: add ``<ground>`` (with a grounding head) and ``<coord>`` to ``tokenizer``, one at a time; the
        new input and output rows are the mean of the older rows; the ids go to the config."""
        names = ([GROUND_TOKEN] if getattr(self, "grounding_head", None) is not None else []) + [COORD_TOKEN]
        for name in names:
            if tokenizer.convert_tokens_to_ids(name) not in (None, tokenizer.unk_token_id):
                raise ValueError(f"the tokenizer already has {name}")
            tokenizer.add_tokens([name])
            old = self.get_input_embeddings().weight.shape[0]
            self.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            with torch.no_grad():
                for matrix in (self.get_input_embeddings().weight, self.get_output_embeddings().weight):
                    matrix[old:] = matrix[:old].mean(dim=0)
            setattr(self.config, "ground_token_id" if name == GROUND_TOKEN else "coord_token_id", tokenizer.convert_tokens_to_ids(name))
        return {name: tokenizer.convert_tokens_to_ids(name) for name in names}

    @classmethod
    def from_pretrained(cls, path, *args, generative: GenerativeSettings | None = None, grounding: dict | None = None,
                        expect_generative: bool = False, **kwargs):
        """Load our checkpoints, or convert an original LLaVA-NeXT / llava-hf one on load (``vega3d convert``
        writes the same conversion to disk). ``generative``/``grounding`` attach a new (seeded) branch or head
        to a checkpoint without one; a checkpoint whose config has them must also hold their weights.
        ``expect_generative`` refuses a checkpoint that has no generative branch (and gets none attached)."""
        path = Path(path)
        raw = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else None
        if raw is None:
            raise FileNotFoundError(f"{path}: no config.json")
        layout = None
        if raw.get("model_type") != cls.config_class.model_type:
            layout = detect_layout(checkpoint_keys(path), str(path)) if raw.get("model_type") != "llava_onevision" else LAYOUTS["llava-hf"]
            for key in checkpoint_keys(path):
                layout.rename(key, str(path))  # unknown keys are an error, before anything loads
            raw = layout.convert_config(raw)
        elif generative is not None and raw.get("vega3d") is not None:
            raise ValueError(f"{path} already has a generative branch; leave 'generative' out to keep it")
        config = kwargs.pop("config", None) or cls.config_class(**{k: v for k, v in raw.items() if k != "model_type"})
        if generative is not None:
            config.vega3d = generative.to_dict()
        if grounding is not None:
            config.grounding = grounding
        if expect_generative and config.vega3d is None:
            raise ValueError(f"{path} has no generative branch (a plain LLaVA-Video / Video-3D LLM checkpoint); load it "
                             "with generative=GenerativeSettings(...) to attach a new one")
        attached = {"generative": generative is not None, "grounding": grounding is not None}
        if layout is not None:
            kwargs["key_mapping"] = dict(layout.renames)
        model, info = super().from_pretrained(path, *args, config=config, output_loading_info=True, **kwargs)
        missing = set(info["missing_keys"])
        for part, prefixes in (("generative", [f"model.{a}." for a in ADAPTERS]), ("grounding", ["grounding_head."])):
            absent = sorted(k for k in missing if k.startswith(tuple(prefixes)))
            if absent and not attached[part]:
                raise ValueError(f"{path}: the config has {part} settings but the weights lack them ({absent[:3]}); "
                                 f"a checkpoint without them loads with {part}=... to attach new ones")
            missing -= set(absent)
        if missing:
            raise ValueError(f"{path}: weights missing from the checkpoint: {sorted(missing)[:5]}")
        return model


def load_llava_video(path, generative: GenerativeSettings | None = None, grounding: dict | None = None):
    """The 3D model from any checkpoint users have (ours, LLaVA-NeXT, llava-hf)."""
    return Vega3DLlavaVideoForConditionalGeneration.from_pretrained(path, generative=generative, grounding=grounding)


register_family(Vega3DLlavaVideoConfig.model_type, Vega3DLlavaVideoConfig, Vega3DLlavaVideoForConditionalGeneration,
                auto_classes=("AutoModel", "AutoModelForImageTextToText"))
