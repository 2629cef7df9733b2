"""``Vega3DOpenVLAForActionPrediction``: OpenVLA-OFT with the VEGA-3D generative branch (paper Sec. 5.3).

The model is OpenVLA (fused DINOv2+SigLIP patches -> 3-layer projector -> Llama) run with the OFT recipe
(REFERENCE-VLA Sec. 2): the sequence is ``[BOS] + visual tokens (P per image) + [proprio token] +
prompt + K*A action placeholders + STOP``; the placeholder embeddings are zeroed (only RoPE tells them
apart), attention is bidirectional over the whole sequence (only padding keys are masked), and the final
hidden states at the K*A positions -- shifted by one, as OFT slices them (F2.7) -- go to the L1-regression
head, which returns a whole chunk of K normalised actions in one forward pass.

The generative branch (:class:`vega3d.models.GenerativeBranch`, the same code the MLLMs use) fuses the
frozen backbone's tokens of the third-person image (and optionally the wrist image), resampled to the
16x16 patch grid and projected to the LLM width, with that image's projected visual tokens, before they
enter the LLM. It adds no token, so the action slice does not move (F2.20).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaForCausalLM
from transformers.masking_utils import create_bidirectional_mask

from vega3d.models.branch import GenerativeBranch, resample_tokens
from vega3d.models.settings import GenerativeSettings
from vega3d.policies.config import OpenVLAConfig, PolicySettings
from vega3d.policies.heads import L1RegressionActionHead, ProprioProjector
from vega3d.policies.vision import FusedVisionBackbone, PrismaticProjector

#: Tokens after the prompt: K*A placeholders + STOP (the ids are zeroed / ignored, F2.2-F2.4).
PLACEHOLDER_ID, STOP_ID = 1, 2


class Vega3DOpenVLAForActionPrediction(GenerativeBranch, nn.Module):
    """OpenVLA-OFT (L1 head, proprio, parallel decoding of action chunks) + optional generative branch."""

    def __init__(self, config: OpenVLAConfig, policy: PolicySettings | None = None,
                 generative: GenerativeSettings | None = None):
        super().__init__()
        self.config, self.policy = config, policy or PolicySettings()
        hidden = config.text_config.hidden_size
        self.vision_backbone = FusedVisionBackbone(config)
        self.projector = PrismaticProjector(self.vision_backbone.embed_dim, hidden)
        self.language_model = LlamaForCausalLM(config.text_config)
        for layer in self.language_model.model.layers:  # OFT's fork: every attention is bidirectional (F2.6)
            layer.self_attn.is_causal = False
        self.action_head = self.build_head("action_head")
        self.proprio_projector = self.build_head("proprio_projector") if self.policy.use_proprio else None
        self.generative = generative
        if generative is not None:
            if generative.fusion == "sequence_concat":
                raise ValueError("fusion 'sequence_concat' doubles the visual tokens and would shift OFT's action slice")
            if generative.projector != "mlp":
                raise ValueError(f"projector {generative.projector!r} merges 2x2 windows of a Qwen grid; the policy's "
                                 "16x16 patch grid takes the 'mlp' projector")
            self.init_generative_branch(generative, hidden)

    def build_head(self, name: str, device: str | None = None) -> nn.Module:
        """A freshly initialised OFT head (``action_head`` or ``proprio_projector``), as fine-tuning starts."""
        hidden = self.config.text_config.hidden_size
        with torch.device(device) if device else contextlib.nullcontext():
            if name == "action_head":
                return L1RegressionActionHead(hidden, self.policy.action_dim, self.policy.num_actions_chunk)
            return ProprioProjector(self.policy.proprio_dim, hidden)

    @property
    def num_action_tokens(self) -> int:
        return self.policy.num_actions_chunk * self.policy.action_dim

    @property
    def num_patches(self) -> int:
        """NUM_PATCHES of OFT: visual tokens of all images plus the proprio token."""
        return self.vision_backbone.num_patches * self.policy.num_images + int(self.proprio_projector is not None)

    # --- visual tokens -------------------------------------------------------------------------------
    def visual_tokens(self, pixel_values: torch.Tensor, generative_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Projected visual tokens ``[B, N * P, D]``, fused with the generative stream when the model has one.

        ``generative_tokens``: ``[B, I, T, h, w, C]`` backbone tokens of the I fused images (I = 1: third-person;
        2: + wrist), T frames each (the current frame, or a short history clip ending at it).
        """
        expected = self.policy.num_images * self.vision_backbone.channels_per_image
        if pixel_values.shape[1] != expected:
            raise ValueError(f"pixel_values has {pixel_values.shape[1]} channels; this policy takes "
                             f"{self.policy.num_images} image(s) x {self.vision_backbone.channels_per_image} = {expected}")
        tokens = self.projector(self.vision_backbone(pixel_values))
        if self.generative is None:
            if generative_tokens is not None:
                raise ValueError("this policy has no generative branch; do not pass generative_tokens")
            return tokens
        if generative_tokens is None:
            raise ValueError(f"this policy has a generative branch: pass generative_tokens [B, I, T, h, w, C] "
                             f"from backbone {self.generative.backbone!r}")
        batch, images, frames = generative_tokens.shape[:3]
        if (batch, images) != (tokens.shape[0], self.policy.generative_image_count):
            raise ValueError(f"generative_tokens has shape {tuple(generative_tokens.shape)}; expected "
                             f"[{tokens.shape[0]}, {self.policy.generative_image_count}, T, h, w, C]")
        grid = self.vision_backbone.grid
        gen = resample_tokens(generative_tokens.flatten(0, 2), grid, frames, self.generative.resample)  # [B*I, H, W, C]
        per_image = tokens.reshape(batch, self.policy.num_images, -1, tokens.shape[-1])
        fused = self.fuse_generative(per_image[:, :images].flatten(0, 1), gen)
        per_image = torch.cat([fused.reshape(batch, images, *fused.shape[1:]), per_image[:, images:]], dim=1)
        return per_image.flatten(1, 2)

    # --- forward -------------------------------------------------------------------------------------
    def action_hidden_states(self, input_ids, attention_mask, pixel_values, proprio=None, generative_tokens=None):
        """Final hidden states ``[B, K*A, D]`` at OFT's action slice (one forward pass, no decoding loop)."""
        prefix = self.visual_tokens(pixel_values, generative_tokens)
        if self.proprio_projector is not None:
            if proprio is None:
                raise ValueError("this policy uses proprio: pass proprio [B, proprio_dim] (normalised)")
            prefix = torch.cat([prefix, self.proprio_projector(proprio.to(prefix.dtype))[:, None]], dim=1)
        embed = self.language_model.get_input_embeddings()
        lengths = attention_mask.sum(dim=1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # Placeholders are the K*A tokens before STOP at the end of each (right-padded) sequence.
        actions = (positions[None] >= (lengths - 1 - self.num_action_tokens)[:, None]) & (positions[None] < (lengths - 1)[:, None])
        embeds = embed(input_ids) * (~actions)[..., None].to(prefix.dtype)
        sequence = torch.cat([embeds[:, :1], prefix.to(embeds.dtype), embeds[:, 1:]], dim=1)
        mask = torch.cat([attention_mask[:, :1], attention_mask.new_ones(prefix.shape[:2]), attention_mask[:, 1:]], dim=1)
        bidirectional = create_bidirectional_mask(self.language_model.config, sequence, mask, allow_is_bidirectional_skip=False)
        hidden = self.language_model.model(inputs_embeds=sequence, attention_mask=bidirectional).last_hidden_state
        # OFT's slice: from NUM_PATCHES + NUM_PROMPT_TOKENS, i.e. the last prompt token and placeholders 0..K*A-2.
        prompt_tokens = lengths - 2 - self.num_action_tokens  # without BOS, STOP and placeholders
        start = self.num_patches + prompt_tokens
        index = (start[:, None] + torch.arange(self.num_action_tokens, device=hidden.device)[None])
        return hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))

    def forward(self, input_ids, attention_mask, pixel_values, proprio=None, actions=None, generative_tokens=None, **_):
        """Normalised action chunk ``[B, K, A]``; with ``actions`` (normalised), also the L1 loss (F2.9)."""
        hidden = self.action_hidden_states(input_ids, attention_mask, pixel_values, proprio, generative_tokens)
        predicted = self.action_head(hidden.to(next(self.action_head.parameters()).dtype))
        output = {"actions": predicted}
        if actions is not None:
            if actions.shape[1:] != predicted.shape[1:]:
                raise ValueError(f"actions have shape {tuple(actions.shape)}; this policy predicts chunks of "
                                 f"{tuple(predicted.shape[1:])} (num_actions_chunk, action_dim)")
            output["loss"] = F.l1_loss(predicted, actions.to(predicted.dtype))
        return output

    def trainable_modules(self) -> dict[str, nn.Module]:
        """The modules OFT trains in full (LoRA covers the rest): heads and, if present, the generative adapters."""
        names = ["action_head", "proprio_projector"] + (["generative_projector", "fusion"] if self.generative else [])
        return {name: getattr(self, name) for name in names if getattr(self, name, None) is not None}
