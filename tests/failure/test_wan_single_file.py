"""A diffusers transformer file given where an original single-file Wan checkpoint is expected."""

from __future__ import annotations

import pytest
import torch

from vega3d.backbones.wan_loading import resolve_weights, transformer_class

TINY = dict(num_attention_heads=2, attention_head_dim=12, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2,
            in_channels=4, out_channels=4, rope_max_seq_len=64)


def test_diffusers_transformer_file_is_named_with_the_folder_to_pass(tmp_path):
    torch.manual_seed(0)
    transformer_class(False)(**TINY).save_pretrained(tmp_path / "wan" / "transformer")
    file = next((tmp_path / "wan" / "transformer").glob("*.safetensors"))
    with pytest.raises(ValueError, match=r"a diffusers WanTransformer3DModel file, not an original single-file Wan "
                                         r"checkpoint; pass the diffusers folder .*wan\)"):
        resolve_weights("wan2.1-t2v-1.3b", str(file))
