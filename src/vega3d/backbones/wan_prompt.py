"""The empty-prompt embedding the DiT is conditioned on: UMT5 output for "" zero-padded to 512 rows.

The DiT's cross-attention is not masked, so the padding length changes its output: the file must hold
exactly ``[1, 512, text_dim]``. It is computed once (``vega3d prompt-embedding``) and read from a small
safetensors file holding one tensor named ``prompt_embeds``.
"""

from __future__ import annotations

from pathlib import Path

import torch

PROMPT_LENGTH = 512
PROMPT_KEY = "prompt_embeds"
DEFAULT_PROMPT_FILE = "vega3d_empty_prompt.safetensors"  # looked for inside the weights folder
HOW_TO_MAKE = "make it once with `vega3d prompt-embedding --weights WAN_DIR [--out FILE]`"


def load_prompt_embedding(path, text_dim: int) -> torch.Tensor:
    """``[1, 512, text_dim]`` float32 from ``path``; a clear error (and how to make it) otherwise."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt embedding {path}: no such file; {HOW_TO_MAKE}")
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
