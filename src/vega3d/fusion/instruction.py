"""The instruction context vector of Alg. 1 line 18 (``BUILDINSTRUCTIONCONTEXT``), as released.

``build_instruction_context(input_ids, embed_tokens, vocabulary)`` gives one L2-normalised ``[B, D]``
vector per sample, the ``context=`` of the ``instruction_token_gated`` fusion. Per sample
(REFERENCE-SR.md section 4, ``_build_instruction_context_vectors``):

1. candidates: tokens inside the attention mask whose label is ``ignore_index`` (all, without labels),
   after the first image token (anywhere, without one), with id >= 0; if none, every id >= 0 in the mask;
2. drop the template ids (tokens of fixed prompt phrases, minus the relation ids), unless that leaves none;
3. keep the last ``tail_keep`` (96) tokens;
4. append the relation ids that occur among the step-2 tokens, once each, in order of first occurrence;
5. embed; weight ``relation_boost`` (2.0) for relation tokens, else 1; ``sum(w e) / max(sum(w), 1e-6)``;
   L2-normalise in float32 (eps 1e-6); cast back to the embedding dtype.

The phrase lists are parameters: the fact sheet gives only their sizes (8 template phrases, 22 relation
phrases) and the first and last relation words; the default strings are our choice (docs/fusion.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200

#: Fixed prompt text of the 3D setting that follows the image token (REFERENCE-3D facts 18, 28, 31-33).
TEMPLATE_PHRASES: tuple[str, ...] = (
    "The video captures 3D spatial information of a scene.",
    "Please focus on the spatial relationships in the video and answer the following questions.",
    "Identify the object according to the following description.",
    "There may be no corresponding object, or there may be one or more objects.",
    "Given an object located at",
    "describe the object in detail.",
    "Answer the question simply.",
    "Answer the question using a single word or phrase.",
)

#: Spatial-relation words whose tokens are kept past the tail cut and weighted up.
RELATION_PHRASES: tuple[str, ...] = (
    "left", "right", "behind", "front", "above", "below", "under", "top", "bottom", "beside", "next",
    "near", "far", "between", "closest", "nearest", "farthest", "inside", "opposite", "center", "middle",
    "corner",
)


@dataclass(frozen=True)
class InstructionVocabulary:
    """Token ids of the template and relation phrases for one tokenizer.

    ``template_ids`` excludes every relation id (a relation word inside a template is never dropped).
    """

    template_ids: frozenset[int]
    relation_ids: frozenset[int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "relation_ids", frozenset(int(i) for i in self.relation_ids))
        object.__setattr__(self, "template_ids", frozenset(int(i) for i in self.template_ids) - self.relation_ids)

    @classmethod
    def from_token_ids(cls, template: Iterable[Iterable[int]], relation: Iterable[Iterable[int]]) -> "InstructionVocabulary":
        """From the token ids of each phrase (any tokenizer)."""
        return cls(frozenset(i for ids in template for i in ids), frozenset(i for ids in relation for i in ids))

    @classmethod
    def from_tokenizer(cls, tokenizer, template_phrases: Sequence[str] = TEMPLATE_PHRASES,
                       relation_phrases: Sequence[str] = RELATION_PHRASES, leading_space: bool = True) -> "InstructionVocabulary":
        """Tokenise the phrases with ``tokenizer.encode(text, add_special_tokens=False)``; with ``leading_space``
        each phrase is also encoded as ``" " + phrase`` (how a BPE tokenizer sees a word inside a sentence)."""
        def encode(phrases):
            variants = [p for phrase in phrases for p in ((phrase, " " + phrase) if leading_space else (phrase,))]
            return [tokenizer.encode(text, add_special_tokens=False) for text in variants]

        return cls.from_token_ids(encode(template_phrases), encode(relation_phrases))


def select_instruction_tokens(input_ids: torch.Tensor, vocabulary: InstructionVocabulary, *,
                              attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                              image_token_id: int = IMAGE_TOKEN_INDEX, ignore_index: int = IGNORE_INDEX,
                              tail_keep: int = 96) -> list[int]:
    """Steps 1-4 for one sample ``input_ids [L]``: the token ids whose embeddings are averaged."""
    ids = torch.as_tensor(input_ids).reshape(-1).cpu()
    inside = torch.ones_like(ids, dtype=torch.bool) if attention_mask is None else torch.as_tensor(attention_mask).reshape(-1).cpu().bool()
    prompt = inside if labels is None else inside & (torch.as_tensor(labels).reshape(-1).cpu() == ignore_index)
    images = (ids == image_token_id).nonzero()
    if len(images):
        prompt = prompt & (torch.arange(len(ids)) > images[0, 0])
    chosen = ids[prompt & (ids >= 0)].tolist() or ids[inside & (ids >= 0)].tolist()
    chosen = [t for t in chosen if t not in vocabulary.template_ids] or chosen
    relations = list(dict.fromkeys(t for t in chosen if t in vocabulary.relation_ids))
    return (chosen[-tail_keep:] if tail_keep > 0 else []) + relations


def build_instruction_context(input_ids: torch.Tensor, embed_tokens: Callable[[torch.Tensor], torch.Tensor],
                              vocabulary: InstructionVocabulary, *, attention_mask: torch.Tensor | None = None,
                              labels: torch.Tensor | None = None, image_token_id: int = IMAGE_TOKEN_INDEX,
                              ignore_index: int = IGNORE_INDEX, tail_keep: int = 96,
                              relation_boost: float = 2.0) -> torch.Tensor:
    """``[B, D]`` instruction context vectors of ``input_ids [B, L]`` (``[L]`` gives ``[D]``).

    ``embed_tokens`` maps ids ``[B, L]`` to ``[B, L, D]`` (the LLM's input embedding, e.g.
    ``model.get_input_embeddings()``). A sample with no usable token gets the zero vector.
    """
    ids = torch.as_tensor(input_ids)
    if ids.ndim not in (1, 2) or ids.is_floating_point():
        raise ValueError(f"input_ids must be an integer tensor [B, L] or [L]; got {tuple(ids.shape)} {ids.dtype}")
    if not isinstance(tail_keep, int) or tail_keep < 0:
        raise ValueError(f"tail_keep must be a non-negative integer; got {tail_keep!r}")
    single = ids.ndim == 1
    rows = ids.reshape(1, -1) if single else ids
    extras = {}
    for label, extra in (("attention_mask", attention_mask), ("labels", labels)):
        if extra is not None:
            extra = torch.as_tensor(extra)
            if extra.shape != ids.shape:
                raise ValueError(f"{label} must have the shape of input_ids {tuple(ids.shape)}; got {tuple(extra.shape)}")
            extra = extra.reshape(rows.shape)
        extras[label] = [None] * len(rows) if extra is None else extra
    chosen = [select_instruction_tokens(row, vocabulary, attention_mask=mask, labels=target, image_token_id=image_token_id,
                                        ignore_index=ignore_index, tail_keep=tail_keep)
              for row, mask, target in zip(rows, extras["attention_mask"], extras["labels"])]
    width = max(1, max((len(tokens) for tokens in chosen), default=0))
    padded = torch.zeros(len(rows), width, dtype=torch.long)
    weights = torch.zeros(len(rows), width)
    for row, tokens in enumerate(chosen):
        padded[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        weights[row, : len(tokens)] = torch.tensor([relation_boost if t in vocabulary.relation_ids else 1.0 for t in tokens])
    embeds = embed_tokens(padded.to(ids.device))
    weights = weights.to(embeds.device, embeds.dtype)[..., None]
    mean = (weights * embeds).sum(1) / weights.sum(1).clamp_min(1e-6)
    context = F.normalize(mean.float(), dim=-1, eps=1e-6).to(embeds.dtype)
    return context[0] if single else context
