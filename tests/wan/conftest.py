"""Tiny random-weight Wan models of the real diffusers classes, written once per session in the published
folder layout (transformer/, vae/, text_encoder/, tokenizer/) and loaded through the real loader."""

from __future__ import annotations

import pytest
import torch

# Valid Wan geometry at toy width: 2 heads of 12 channels (RoPE splits 4/4/4), 4 blocks.
TINY_TRANSFORMER = dict(num_attention_heads=2, attention_head_dim=12, text_dim=16, freq_dim=16, ffn_dim=32,
                        num_layers=4, rope_max_seq_len=64)
TINY_VAE = dict(base_dim=8, num_res_blocks=1)


def _tiny_text_encoder(folder):
    """A UMT5 encoder and a word-level tokenizer that appends </s>, as the real UMT5 tokenizer does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    tokenizer = Tokenizer(models.WordLevel({"<pad>": 0, "</s>": 1, "<unk>": 2, "room": 3}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder / "tokenizer")
    torch.manual_seed(0)
    UMT5EncoderModel(UMT5Config(vocab_size=4, d_model=16, d_kv=8, num_heads=2, d_ff=32, num_layers=1)).save_pretrained(folder / "text_encoder")


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory):
    from vega3d.backbones.wan_loading import save_random_wan
    from vega3d.cli import main

    folder = save_random_wan(tmp_path_factory.mktemp("Wan2.1-T2V-tiny-Diffusers"), "wan2.1-t2v-1.3b", TINY_TRANSFORMER, TINY_VAE)
    _tiny_text_encoder(folder)
    assert main(["prompt-embedding", "--weights", str(folder)]) == 0  # writes the default prompt file
    return folder


@pytest.fixture(scope="session")
def tiny_vace(tmp_path_factory, tiny_wan):
    import shutil

    from vega3d.backbones.wan_loading import save_random_wan
    from vega3d.backbones.wan_prompt import DEFAULT_PROMPT_FILE

    folder = save_random_wan(tmp_path_factory.mktemp("Wan2.1-VACE-tiny-diffusers"), "wan2.1-vace-1.3b",
                             {**TINY_TRANSFORMER, "vace_layers": [0, 2]}, TINY_VAE)
    shutil.copy(tiny_wan / DEFAULT_PROMPT_FILE, folder / DEFAULT_PROMPT_FILE)  # same text encoder
    return folder
