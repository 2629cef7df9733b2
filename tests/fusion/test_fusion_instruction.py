"""The instruction context vector on a hand-built vocabulary, worked out by hand."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from vega3d.fusion import RELATION_PHRASES, TEMPLATE_PHRASES, InstructionVocabulary, build_instruction_context
from vega3d.fusion.instruction import IGNORE_INDEX as IGN
from vega3d.fusion.instruction import IMAGE_TOKEN_INDEX as IMG
from vega3d.fusion.instruction import select_instruction_tokens

WORDS = ["<pad>", "<|im_start|>", "user", "The", "video", "where", "is", "the", "chair", "left", "of", "table",
         "Answer", "question", "simply", "assistant", "yes"]
ID = {word: i for i, word in enumerate(WORDS)}
# Templates "Answer the question simply" and "of"; relation phrase "left of": "of" is both, so it is no template.
VOCABULARY = InstructionVocabulary.from_token_ids(
    template=[[ID[w] for w in "Answer the question simply".split()], [ID["of"]]],
    relation=[[ID["left"], ID["of"]]])
EMBED = torch.nn.Embedding(len(WORDS), 3)
with torch.no_grad():
    EMBED.weight.copy_(torch.tensor([[(i % 5) - 2.0, (i % 3) * 1.5, 1.0 - (i % 4)] for i in range(len(WORDS))]))


def ids(text):
    return [IMG if w == "<image>" else ID[w] for w in text.split()]


QUESTION = ids("<|im_start|> user <image> where is the chair left of the table Answer the question simply assistant yes")


def normalised(v):
    return v / v.square().sum().sqrt()


def test_vocabulary_drops_relation_ids_from_the_templates():
    assert VOCABULARY.relation_ids == {ID["left"], ID["of"]}
    assert VOCABULARY.template_ids == {ID["Answer"], ID["the"], ID["question"], ID["simply"]}


def test_selection_steps_by_hand():
    labels = [IGN] * (len(QUESTION) - 2) + [ID["assistant"], ID["yes"]]  # the answer turn is a target
    # after <image>, label IGNORE: where is the chair left of the table Answer the question simply
    # minus templates: where is chair left of table; last 3: left of table; + relations in order: left, of
    tokens = select_instruction_tokens(torch.tensor(QUESTION), VOCABULARY, labels=torch.tensor(labels), tail_keep=3)
    assert tokens == ids("left of table left of")
    # without labels the assistant turn counts too; a long tail keeps everything after the image token
    assert select_instruction_tokens(torch.tensor(QUESTION), VOCABULARY) == ids(
        "where is chair left of table assistant yes left of")


def test_fallbacks():
    only_template = torch.tensor(ids("user <image> Answer the question"))
    assert select_instruction_tokens(only_template, VOCABULARY) == ids("Answer the question")  # nothing left -> keep
    all_targets = torch.tensor(ids("where is <image> chair"))
    labels = all_targets.clone()  # nothing is a prompt token: fall back to every id >= 0
    assert select_instruction_tokens(all_targets, VOCABULARY, labels=labels) == ids("where is chair")
    no_image = torch.tensor(ids("where is the chair"))
    assert select_instruction_tokens(no_image, VOCABULARY) == ids("where is chair")
    assert select_instruction_tokens(torch.tensor([IMG]), VOCABULARY) == []


def test_context_vectors_by_hand_batched_with_padding():
    e = EMBED.weight.detach()
    first = QUESTION[:8]
    second = ids("<|im_start|> <image> where left left") + [ID["<pad>"]] * 3
    batch = torch.tensor([first, second])  # 8 tokens each
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    context = build_instruction_context(batch, EMBED, VOCABULARY, attention_mask=mask)
    # sample 0: "<|im_start|> user <image> where is the chair left" -> where is chair left + left (weights 1,1,1,2,2)
    want0 = normalised((e[ID["where"]] + e[ID["is"]] + e[ID["chair"]] + 4 * e[ID["left"]]) / 7)
    # sample 1: where left left (padding masked) + left -> weights 1, 2, 2, 2
    want1 = normalised((e[ID["where"]] + 6 * e[ID["left"]]) / 7)
    torch.testing.assert_close(context, torch.stack([want0, want1]), rtol=0, atol=1e-6)
    assert context.dtype == torch.float32 and context.requires_grad
    single = build_instruction_context(batch[1, :5], EMBED, VOCABULARY)
    torch.testing.assert_close(single, want1, rtol=0, atol=1e-6)


def test_boost_tail_and_labels_reach_the_vector():
    labels = torch.tensor([[IGN] * (len(QUESTION) - 2) + [ID["assistant"], ID["yes"]]])
    context = build_instruction_context(torch.tensor([QUESTION]), EMBED, VOCABULARY, labels=labels, tail_keep=3,
                                        relation_boost=3.0)
    e = EMBED.weight.detach()
    want = normalised((6 * e[ID["left"]] + 6 * e[ID["of"]] + e[ID["table"]]) / 13)  # left of table left of
    torch.testing.assert_close(context[0], want, rtol=0, atol=1e-6)


def test_empty_sample_gives_zero_and_dtype_follows_the_embedding():
    half = torch.nn.Embedding(len(WORDS), 3).to(torch.bfloat16)
    context = build_instruction_context(torch.tensor([[IMG, IMG], [IMG, ID["chair"]]]), half, VOCABULARY)
    assert context.dtype == torch.bfloat16
    assert torch.equal(context[0], torch.zeros(3, dtype=torch.bfloat16))
    expected = torch.nn.functional.normalize(half.weight[ID["chair"]].float(), dim=0, eps=1e-6).to(torch.bfloat16)
    assert torch.equal(context[1], expected)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"input_ids must be an integer tensor \[B, L\] or \[L\]"):
        build_instruction_context(torch.zeros(2, 3), EMBED, VOCABULARY)
    with pytest.raises(ValueError, match=r"attention_mask must have the shape of input_ids \(1, 3\); got \(1, 2\)"):
        build_instruction_context(torch.tensor([[1, 2, 3]]), EMBED, VOCABULARY, attention_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="tail_keep must be a non-negative integer"):
        build_instruction_context(torch.tensor([1, 2]), EMBED, VOCABULARY, tail_keep=-1)


def test_from_a_real_tokenizer_and_the_default_phrase_lists():
    vocab = {w: i for i, w in enumerate(["[UNK]", "left", "of", "the", "Answer", "question", "simply", "."])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    vocabulary = InstructionVocabulary.from_tokenizer(tokenizer, template_phrases=["Answer the question simply"],
                                                      relation_phrases=["left of"])
    assert vocabulary.relation_ids == {1, 2} and vocabulary.template_ids == {3, 4, 5, 6}
    assert len(TEMPLATE_PHRASES) == 8 and len(RELATION_PHRASES) == len(set(RELATION_PHRASES)) == 22
    assert RELATION_PHRASES[:3] == ("left", "right", "behind") and RELATION_PHRASES[-1] == "corner"
    default = InstructionVocabulary.from_tokenizer(tokenizer)
    # "left" plus [UNK] for the other relation words; [UNK] is a relation id, so no template id
    assert default.relation_ids == {0, 1} and default.template_ids == {2, 3, 4, 5}
