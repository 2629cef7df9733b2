"""The empty-prompt embedding the DiT is conditioned on: UMT5 output for "" zero-padded to 512 rows.

The DiT's cross-attention is not masked, so the padding length changes its output: the file must hold
exactly ``[1, 512, text_dim]``. It is computed once (``vega3d prompt-embedding``) and read from a small
safetensors file holding one tensor named ``prompt_embeds``. The released code's files (a PyTorch
file with a bare tensor, or a dict with ``context`` / ``embedding``, trimmed to the prompt's rows, bf16)
are read with ``torch.load(weights_only=True)`` and zero-padded to 512 rows, as the released DiT does.
"""

from __future__ import annotations

from pathlib import Path

import torch

PROMPT_LENGTH = 512
PROMPT_KEY = "prompt_embeds"
DEFAULT_PROMPT_FILE = "vega3d_empty_prompt.safetensors"  # looked for inside the weights folder
HOW_TO_MAKE = "make it once with `vega3d prompt-embedding --weights WAN_DIR [--out FILE]`"
RELEASED_SUFFIXES = (".pt", ".pth", ".bin")
RELEASED_KEYS = ("context", "embedding")  # the keys the released loader accepts in a dict, in its order


def load_prompt_embedding(path, text_dim: int) -> torch.Tensor:
    """``[1, 512, text_dim]`` float32 from ``path``; a clear error (and how to make it) otherwise."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt embedding {path}: no such file; {HOW_TO_MAKE}")
    if path.suffix in RELEASED_SUFFIXES:
        return load_released_prompt_embedding(path, text_dim)
    try:
        with safe_open(str(path), "pt") as reader:
            if PROMPT_KEY not in reader.keys():
                raise ValueError(f"prompt embedding {path}: no tensor named {PROMPT_KEY!r} (found {list(reader.keys())}); {HOW_TO_MAKE}")
            embeds = reader.get_tensor(PROMPT_KEY)
    except SafetensorError as error:
        raise ValueError(f"prompt embedding {path}: not a safetensors file ({error}); {HOW_TO_MAKE}") from None
    expected = (1, PROMPT_LENGTH, text_dim)
    if tuple(embeds.shape) != expected:
        raise ValueError(f"prompt embedding {path}: shape {tuple(embeds.shape)}, expected {list(expected)} "
                         f"(512 rows: the DiT does not mask padding); {HOW_TO_MAKE}")
    return embeds.float()


def load_released_prompt_embedding(path, text_dim: int) -> torch.Tensor:
    """A released ``wan_prompt_embedding.pt`` -> ``[1, 512, text_dim]`` float32, trailing rows zero."""
    path = Path(path)
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unpickling failure: refused, never executed
        raise ValueError(f"prompt embedding {path}: not a plain tensor file readable with weights_only=True ({error})") from None
    if isinstance(value, dict):
        key = next((k for k in RELEASED_KEYS if k in value), None)
        if key is None:
            raise ValueError(f"prompt embedding {path}: a dict without {' or '.join(RELEASED_KEYS)} (keys {sorted(map(str, value))})")
        value = value[key]
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"prompt embedding {path}: holds a {type(value).__name__}, expected a tensor")
    rows = value.detach().float()
    rows = rows[0] if rows.ndim == 3 and rows.shape[0] == 1 else rows
    if rows.ndim != 2 or rows.shape[-1] != text_dim or not 1 <= rows.shape[0] <= PROMPT_LENGTH:
        raise ValueError(f"prompt embedding {path}: shape {tuple(value.shape)}, expected [rows, {text_dim}] or "
                         f"[1, rows, {text_dim}] with 1 <= rows <= {PROMPT_LENGTH}")
    padded = torch.zeros(1, PROMPT_LENGTH, text_dim)
    padded[0, : rows.shape[0]] = rows
    return padded


def make_prompt_embedding(text_encoder_dir, tokenizer_dir, prompt: str = "", dtype=torch.float32, device="cpu") -> torch.Tensor:
    """UMT5 encoder output for ``prompt``, trimmed to its real tokens and zero-padded to 512 rows.

    Uses diffusers' own Wan prompt encoding (``WanPipeline.encode_prompt``) on local weights.
    """
    from diffusers import WanPipeline
    from transformers import AutoTokenizer, UMT5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    encoder = UMT5EncoderModel.from_pretrained(str(text_encoder_dir), torch_dtype=dtype).to(device).eval()
    pipeline = WanPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=None, scheduler=None)
    with torch.inference_mode():
        embeds, _ = pipeline.encode_prompt(prompt, do_classifier_free_guidance=False, max_sequence_length=PROMPT_LENGTH,
                                           device=torch.device(device), dtype=dtype)
    return embeds.float().cpu()


def save_prompt_embedding(embeds: torch.Tensor, path) -> Path:
    """Atomic write of ``{prompt_embeds: [1, 512, D]}``."""
    from vega3d.io import save_safetensors

    return save_safetensors({PROMPT_KEY: embeds}, path, metadata={"rows": str(PROMPT_LENGTH)})
