"""Token ids and labels of the LLaVA-Video 3D model's conversations, as released (REFERENCE-3D facts 17-21).

* Template ``qwen_1_5``: every message is ``<|im_start|>{role}\\n{content}<|im_end|>\\n``; the system
  message is "You are a helpful assistant.".
* The video goes where the text says ``<image>``: that place becomes the sentinel id ``IMAGE_PLACEHOLDER``
  (-200, LLaVA-NeXT's ``IMAGE_TOKEN_INDEX``), never a vocabulary id, so it cannot clash with added tokens.
  The model splices the visual tokens in there.
* Prompt styles: ``paper`` (default) asks every question with the training text (the spatial instruction
  before the raw question); ``reference`` is the released evaluation prompt (fact 19), which has no spatial
  instruction and an extra "\\n" after the image (fact 48): use it to reproduce the released numbers.
* Labels (fact 21): system and user turns are ignored (-100), the whole assistant turn is a target, and
  then every "\\n", ``<|im_start|>`` and ``<|im_end|>`` anywhere is a target too (a quirk kept for fidelity).
"""

from __future__ import annotations

from vega3d.fusion.instruction import IGNORE_INDEX
from vega3d.fusion.instruction import IMAGE_TOKEN_INDEX as IMAGE_PLACEHOLDER
IMAGE_TEXT = "<image>"
GROUND_TOKEN = "<ground>"
COORD_TOKEN = "<coord>"
SYSTEM_PROMPT = "You are a helpful assistant."
SPATIAL_INSTRUCTION = ("The video captures 3D spatial information of a scene. Please focus on the spatial "
                       "relationships in the video and answer the following questions.\n")
PROMPT_STYLES = ("paper", "reference")
ROLES = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant", "system": "system"}


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text``; each ``<image>`` becomes ``IMAGE_PLACEHOLDER`` (an added token in the released
    code, so the pieces around it are tokenised separately, as here)."""
    ids: list[int] = []
    for number, piece in enumerate(text.split(IMAGE_TEXT)):
        if number:
            ids.append(IMAGE_PLACEHOLDER)
        if piece:
            ids += tokenizer(piece, add_special_tokens=False).input_ids
    return ids


def spatial_user_text(raw: str) -> str:
    """Fact 18: the training user text; the raw text's own ``<image>`` is removed (a leading space stays)."""
    return f"{IMAGE_TEXT}\n{SPATIAL_INSTRUCTION}{raw.replace(IMAGE_TEXT, '')}"


def _message(tokenizer, role: str, content: str) -> list[int]:
    return encode(tokenizer, f"<|im_start|>{role}\n{content}<|im_end|>\n")


def _always_targets(tokenizer) -> set[int]:
    newline = tokenizer("\n", add_special_tokens=False).input_ids
    if len(newline) != 1:
        raise ValueError(f"the tokenizer encodes '\\n' as {len(newline)} tokens; the Qwen template expects one")
    return {newline[0], *tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])}


def training_example(tokenizer, conversations: list[dict], spatial_instruction: bool = True) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of a LLaVA-style record's ``conversations`` (``[{"from": "human"|"gpt",
    "value": ...}, ...]``), facts 17, 18 and 21. The first human turn gets the spatial instruction."""
    ids = _message(tokenizer, "system", SYSTEM_PROMPT)
    labels = [IGNORE_INDEX] * len(ids)
    first_user = True
    for turn in conversations:
        role = ROLES.get(turn.get("from"))
        if role is None or not isinstance(turn.get("value"), str):
            raise ValueError(f"conversation turn {turn!r}: needs 'from' (human/gpt) and a string 'value'")
        content = turn["value"]
        if role == "user" and first_user:
            content, first_user = (spatial_user_text(content) if spatial_instruction else content), False
        message = _message(tokenizer, role, content)
        ids += message
        labels += message if role == "assistant" else [IGNORE_INDEX] * len(message)
    keep = _always_targets(tokenizer)
    labels = [token if token in keep else label for token, label in zip(ids, labels)]
    if ids.count(IMAGE_PLACEHOLDER) != 1:
        raise ValueError(f"a conversation must hold exactly one {IMAGE_TEXT}; this one has {ids.count(IMAGE_PLACEHOLDER)}")
    return ids, labels


def inference_prompt(tokenizer, raw: str, style: str = "paper", answer: str = "", spatial_instruction: bool = True) -> list[int]:
    """Prompt ids for the first human turn ``raw`` (a record's ``conversations[0].value``), ending with the
    assistant header and ``answer`` (``"<ground>"`` for grounding: the head reads that token's state).
    ``paper`` asks as :func:`training_example` with the same ``spatial_instruction`` was trained."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; choose from {', '.join(PROMPT_STYLES)}")
    if style == "paper":
        user = spatial_user_text(raw) if spatial_instruction else raw
        ids = _message(tokenizer, "system", SYSTEM_PROMPT) + _message(tokenizer, "user", user)
        return ids + encode(tokenizer, f"<|im_start|>assistant\n{answer}")
    # Fact 19, piece by piece: the image token is followed by an extra "\n" and the raw text after it.
    nl = encode(tokenizer, "\n")
    start, end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    before, _, after = raw.partition(IMAGE_TEXT)
    ids = [start] + encode(tokenizer, "system") + nl + encode(tokenizer, SYSTEM_PROMPT) + [end] + nl
    ids += encode(tokenizer, "<|im_start|>user") + nl + encode(tokenizer, before) + [IMAGE_PLACEHOLDER] + nl
    ids += encode(tokenizer, after) + [end] + nl + encode(tokenizer, "<|im_start|>assistant") + nl
    return ids + encode(tokenizer, answer)
