"""Prompts and labels of the 3D model as released (facts 17-21), on the byte-level tiny Qwen2 tokenizer."""

from __future__ import annotations

import pytest

from vega3d.models.llava_prompts import (
    IGNORE_INDEX,
    IMAGE_PLACEHOLDER,
    SPATIAL_INSTRUCTION,
    inference_prompt,
    training_example,
)
from vega3d.models.llava_tiny import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = tiny_tokenizer()
    tokenizer.add_tokens(["<ground>", "<coord>"])  # what the model's add_location_tokens does
    return tokenizer


def text(tokenizer, ids):
    return "".join("<image>" if i == IMAGE_PLACEHOLDER else tokenizer.decode([i]) for i in ids)


def test_training_text_has_the_spatial_instruction_and_the_released_label_rule(tokenizer):
    conversation = [{"from": "human", "value": "<image> What is left of the sofa?"}, {"from": "gpt", "value": "A lamp."}]
    ids, labels = training_example(tokenizer, conversation)
    assert text(tokenizer, ids) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n<image>\n{SPATIAL_INSTRUCTION} What is left of the sofa?<|im_end|>\n"  # leading space kept
        "<|im_start|>assistant\nA lamp.<|im_end|>\n")
    assistant = text(tokenizer, ids).index("<|im_start|>assistant")
    start = next(i for i in range(len(ids)) if text(tokenizer, ids[:i + 1]).endswith("<|im_start|>") and
                 len(text(tokenizer, ids[:i + 1])) > assistant)
    assert labels[start:] == ids[start:]  # the whole assistant turn, header included
    always = {tokenizer("\n").input_ids[0], *tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])}
    for token, label in zip(ids[:start], labels[:start]):
        assert label == (token if token in always else IGNORE_INDEX)  # "\n", <|im_start|>, <|im_end|> unmasked everywhere
    assert IMAGE_PLACEHOLDER in ids and labels[ids.index(IMAGE_PLACEHOLDER)] == IGNORE_INDEX


def test_reference_eval_prompt_has_no_instruction_and_an_extra_newline(tokenizer):
    raw = "<image>Identify the object according to the following description.\nA red chair."
    ids = inference_prompt(tokenizer, raw, style="reference", answer="<ground>")
    assert text(tokenizer, ids) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n"
        "Identify the object according to the following description.\nA red chair.<|im_end|>\n"
        "<|im_start|>assistant\n<ground>")
    paper = inference_prompt(tokenizer, raw, answer="<ground>")
    assert text(tokenizer, paper) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n" + SPATIAL_INSTRUCTION
        + "Identify the object according to the following description.\nA red chair.<|im_end|>\n<|im_start|>assistant\n<ground>")
    assert paper[-1] == tokenizer.convert_tokens_to_ids("<ground>")


def test_prompt_errors(tokenizer):
    with pytest.raises(ValueError, match="unknown prompt style 'eval'"):
        inference_prompt(tokenizer, "<image>x", style="eval")
    with pytest.raises(ValueError, match="exactly one <image>; this one has 2"):
        training_example(tokenizer, [{"from": "human", "value": "<image>a"}, {"from": "gpt", "value": "<image>"}])
    with pytest.raises(ValueError, match="needs 'from'"):
        training_example(tokenizer, [{"from": "robot", "value": "a"}])
