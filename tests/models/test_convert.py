"""Checkpoint conversion: rename tables, strict keys, streaming shards, atomic output folders."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from vega3d.cli import main
from vega3d.models import convert
from vega3d.models.convert import Layout, convert_checkpoint, convert_state_dict

TOY = Layout(
    name="toy-upstream", description="a layout made for this test",
    renames=((r"^model\.layers\.", "model.language_model.layers."), (r"^mm_projector\.0\.", "projector.linear_1."),
             (r"^lm_head\.", "lm_head.")),
    detect=lambda keys: any(k.startswith("mm_projector.") for k in keys),
    drop=(r"rotary_emb\.inv_freq$",),
    convert_config=lambda config: {**config, "model_type": "toy_converted"},
)


@pytest.fixture()
def toy_layout(monkeypatch):
    monkeypatch.setitem(convert.LAYOUTS, TOY.name, TOY)
    return TOY


def _write_sharded(folder, shards):
    folder.mkdir()
    weight_map = {}
    for number, tensors in enumerate(shards, start=1):
        name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, str(folder / name))
        weight_map.update({key: name for key in tensors})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"model_type": "toy", "hidden_size": 4}))
    (folder / "tokenizer_config.json").write_text("{}")


def test_rename_table_is_ordered_strict_and_drops_buffers(toy_layout):
    state = {"model.layers.0.w": torch.ones(1), "mm_projector.0.weight": torch.zeros(2),
             "model.layers.0.rotary_emb.inv_freq": torch.ones(3)}
    out = convert_state_dict(state, toy_layout)
    assert set(out) == {"model.language_model.layers.0.w", "projector.linear_1.weight"}
    with pytest.raises(ValueError, match="'vision.x' is not part of the 'toy-upstream' layout"):
        convert_state_dict({"vision.x": torch.ones(1)}, toy_layout)


def test_convert_streams_shards_detects_layout_and_rewrites_config(toy_layout, tmp_path):
    source = tmp_path / "upstream"
    a, b = torch.randn(2, 3), torch.randn(4)
    _write_sharded(source, [{"model.layers.0.w": a}, {"mm_projector.0.weight": b, "lm_head.weight": a.T.contiguous()}])
    assert main(["convert", str(source), str(tmp_path / "ours")]) == 0
    ours = tmp_path / "ours"
    index = json.loads((ours / "model.safetensors.index.json").read_text())["weight_map"]
    assert index == {"lm_head.weight": "model-00002-of-00002.safetensors",
                     "model.language_model.layers.0.w": "model-00001-of-00002.safetensors",
                     "projector.linear_1.weight": "model-00002-of-00002.safetensors"}
    torch.testing.assert_close(load_file(str(ours / index["projector.linear_1.weight"]))["projector.linear_1.weight"], b)
    assert json.loads((ours / "config.json").read_text())["model_type"] == "toy_converted"
    assert (ours / "tokenizer_config.json").is_file()
    assert json.loads((source / "config.json").read_text())["model_type"] == "toy"  # input untouched


def test_output_must_be_new_and_failures_leave_nothing(toy_layout, tmp_path, capsys):
    source = tmp_path / "upstream"
    _write_sharded(source, [{"mm_projector.0.weight": torch.ones(1), "unknown.key": torch.ones(1)}])
    with pytest.raises(ValueError, match="output folder must be new or empty"):
        convert_checkpoint(source, source)
    assert main(["convert", str(source), str(tmp_path / "out")]) == 1
    assert "'unknown.key' is not part of the 'toy-upstream' layout" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()
    with pytest.raises(ValueError, match="unknown checkpoint layout 'nope'"):
        convert_checkpoint(source, tmp_path / "o2", layout="nope")


def test_pytorch_bin_is_read_without_code_execution(toy_layout, tmp_path):
    source = tmp_path / "bin"
    source.mkdir()
    torch.save({"mm_projector.0.weight": torch.arange(3.0)}, source / "pytorch_model.bin")
    convert_checkpoint(source, tmp_path / "ours")
    assert load_file(str(tmp_path / "ours" / "model.safetensors"))["projector.linear_1.weight"].tolist() == [0, 1, 2]

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": Evil()}, source / "pytorch_model.bin")
    with pytest.raises(ValueError, match="weights_only=True"):
        convert_checkpoint(source, tmp_path / "ours2")


def test_list_needs_no_folders_and_names_the_registered_layouts(capsys):
    assert main(["convert", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "llava-next:" in listed and "vega3d-sr:" in listed
    assert main(["convert", "only-a-source"]) == 1
    assert "give SOURCE and DESTINATION" in capsys.readouterr().err
