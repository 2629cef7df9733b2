"""`vega3d inspect --compare-wan` on a toy: a DiT re-initialised as the released construction does it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vega3d.cli import main
from vega3d.models.dit_compare import _diffusers_names, compare_dit
from vega3d.models.released_keys import released_generative_shapes
from vega3d.models.released_sr import DIT_PREFIX

TINY = dict(num_attention_heads=2, attention_head_dim=12, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=64)
SHAPES = dict(dim=24, ffn_dim=32, num_layers=2, text_dim=16, freq_dim=16, in_channels=16)


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    """A published-layout Wan folder, transformer only (the comparison never reads the VAE)."""
    from diffusers import WanTransformer3DModel

    folder = tmp_path_factory.mktemp("wan")
    torch.manual_seed(0)
    WanTransformer3DModel(**TINY).save_pretrained(folder / "transformer")
    return folder


def released_dit(wan_folder, reinitialise: bool) -> dict:
    """The published DiT in the original naming under the released prefix; with ``reinitialise``, Linear and
    Conv3d weights N(0, 0.02) and their biases 0, as the released from_pretrained leaves them."""
    published = load_file(str(next((wan_folder / "transformer").glob("*.safetensors"))))
    original = [k[len(DIT_PREFIX):] for k in released_generative_shapes(8, SHAPES) if k.startswith(DIT_PREFIX)]
    names = _diffusers_names(original)
    generator = torch.Generator().manual_seed(3)
    state = {}
    for key in original:
        value = published[names[key]].clone()
        layer = key.rsplit(".", 1)[0]
        is_norm = "norm" in layer.rsplit(".", 1)[-1] or key.endswith("modulation")
        if reinitialise and not is_norm:
            value = torch.randn(value.shape, generator=generator) * 0.02 if key.endswith("weight") else torch.zeros_like(value)
        state[DIT_PREFIX + key] = value
    return state


def test_reinitialised_dit_differs_except_norms_and_modulation(wan, tmp_path, capsys):
    folder = tmp_path / "released"
    folder.mkdir()
    save_file(released_dit(wan, reinitialise=True), str(folder / "model.safetensors"))
    assert main(["inspect", str(folder), "--compare-wan", str(wan), "--json", str(tmp_path / "cmp.json")]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "cmp.json").read_text())
    groups = {g["group"]: g for g in report["per_group"]}
    assert report["tensors"] == 15 + 27 * 2 and not report["only_in_checkpoint"]
    for kept in ("blocks.*.norm2.weight", "blocks.*.attn1.norm_q.weight", "blocks.*.scale_shift_table", "scale_shift_table"):
        assert groups[kept]["equal"], kept
    for changed in ("blocks.*.attn1.to_q.weight", "blocks.*.ffn.net.0.proj.weight", "patch_embedding.weight",
                    "condition_embedder.text_embedder.linear_1.weight"):
        assert not groups[changed]["equal"] and groups[changed]["std_checkpoint"] == pytest.approx(0.02, rel=0.25), changed
    assert groups["blocks.*.attn1.to_q.bias"]["std_checkpoint"] == 0.0
    assert f"{report['groups_equal']} of {report['groups']} groups" in printed and "NO" in printed


def test_pristine_dit_is_reported_equal(wan, tmp_path):
    file = tmp_path / "dit.safetensors"
    save_file(released_dit(wan, reinitialise=False), str(file))
    reports, summary = compare_dit(file, wan)
    assert all(r.equal and r.max_abs_diff == 0 for r in reports)
    assert summary["groups_equal"] == summary["groups"] and summary["params_equal"] == summary["params"]


def test_json_report_never_replaces_a_file_without_overwrite(tmp_path, capsys):
    from vega3d.cli import main

    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    existing = tmp_path / "report.json"
    existing.write_text("mine")
    assert main(["inspect", str(checkpoint), "--compare-wan", str(tmp_path), "--json", str(existing)]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err and existing.read_text() == "mine"
