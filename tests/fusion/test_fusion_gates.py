"""Gates file round trip, the overlay formula, the PNG and the ``vega3d gates`` command."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from vega3d.cli import main
from vega3d.fusion import build_fusion, load_gates, overlay_gates, plot_gates, save_gates


def frames_and_gates(t=3, size=(12, 20), grid=(3, 4), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(t, 3, *size, generator=generator), torch.rand(t, *grid, generator=generator)


def test_overlay_blends_each_token_colour_over_its_cell():
    frames, gates = frames_and_gates()
    image = overlay_gates(frames, gates, alpha=0.4)
    assert image.shape == (3, 12, 20, 3)
    colours = matplotlib.colormaps["viridis"]
    for t, y, x in [(0, 0, 0), (1, 5, 7), (2, 11, 19), (2, 3, 5)]:
        token = gates[t, y * 3 // 12, x * 4 // 20].item()  # cells of 4 x 5 pixels
        want = 0.6 * frames[t, :, y, x].numpy() + 0.4 * np.array(colours(token)[:3])
        np.testing.assert_allclose(image[t, y, x], want, rtol=1e-6)


def test_plot_gates_writes_a_png(tmp_path):
    frames, gates = frames_and_gates(t=5)
    out = plot_gates(frames, gates, tmp_path / "sub" / "gates.png", "tiny test | RANDOM weights", columns=2)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 200
    assert [p.name for p in out.parent.iterdir()] == ["gates.png"]  # no temporary left behind


@pytest.mark.parametrize("gates, message", [
    (torch.rand(2, 3, 4), r"gates must have shape \[T=3, h, w\]"),
    (torch.rand(3, 12), r"gates must have shape \[T=3, h, w\]"),
    (torch.rand(3, 3, 4) + 1.0, r"gate values must lie in \[0, 1\]"),
    (torch.rand(3, 24, 4), "finer than the frames"),
    (None, r"frames must be float in \[0, 1\]; got \[0, 255\]"),
])
def test_plot_gates_rejects_bad_gates_without_writing(tmp_path, gates, message):
    frames, good_gates = frames_and_gates()
    if gates is None:
        frames, gates = frames * 0 + torch.linspace(0, 255, 20), good_gates
    with pytest.raises(ValueError, match=message):
        plot_gates(frames, gates, tmp_path / "gates.png", "x")
    assert not list(tmp_path.iterdir())


def test_save_and_load_round_trip(tmp_path):
    frames, gates = frames_and_gates()
    path = save_gates(tmp_path / "g.safetensors", frames, gates, model="m", weights="random", random_weights=True,
                      question="where?")
    record = load_gates(path)
    torch.testing.assert_close(record.frames, (frames * 255).round() / 255)  # stored as uint8
    assert torch.equal(record.gates, gates)
    assert record.metadata == {"model": "m", "weights": "random", "random_weights": "true", "question": "where?"}
    assert record.title == "m | RANDOM weights (untrained)"
    trained = save_gates(tmp_path / "t.safetensors", frames, gates, model="m", weights="ckpt/step-10", random_weights=False)
    assert load_gates(trained).title == "m | weights: ckpt/step-10"


def test_load_gates_errors_name_the_file_and_problem(tmp_path):
    frames, gates = frames_and_gates()
    bare = tmp_path / "bare.safetensors"
    save_file({"frames": frames, "gates": gates}, str(bare))
    with pytest.raises(ValueError, match=r"bare.safetensors: gates file lacks metadata \['model', 'weights', 'random_weights'\]"):
        load_gates(bare)
    no_gates = tmp_path / "no_gates.safetensors"
    save_file({"frames": frames}, str(no_gates), metadata={"model": "m", "weights": "w", "random_weights": "true"})
    with pytest.raises(ValueError, match=r"no_gates.safetensors: gates file lacks tensor\(s\) \['gates'\]"):
        load_gates(no_gates)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors: not a readable safetensors file"):
        load_gates(junk)
    with pytest.raises(FileNotFoundError, match="missing.safetensors: no such gates file"):
        load_gates(tmp_path / "missing.safetensors")


def test_gates_command_on_a_real_scan(tmp_path, hololens_scene, capsys):
    from vega3d.scenes import load_scene, sample_frames

    frames = sample_frames(load_scene(hololens_scene), num_frames=4, image_size=(56, 56)).images
    torch.manual_seed(0)
    fusion = build_fusion("gated", 8)
    cells = torch.nn.functional.adaptive_avg_pool2d(frames, (4, 4)).permute(0, 2, 3, 1).reshape(4, 16, 3)
    sem, gen = torch.cat([cells, cells.square(), cells[..., :2]], -1), torch.randn(4, 16, 8)
    _, gate = fusion(sem, gen, return_gate=True)
    path = save_gates(tmp_path / "gates.safetensors", frames, gate.detach().reshape(4, 4, 4),
                      model="gated fusion on pixel tokens", weights="random", random_weights=True)
    assert main(["gates", str(path), "--columns", "2"]) == 0
    out = capsys.readouterr().out
    assert "gates.png: 4 frames, 4x4 tokens" in out and "RANDOM weights (untrained)" in out
    with Image.open(tmp_path / "gates.png") as image:
        assert image.format == "PNG"
    assert main(["gates", str(path), "--out", str(tmp_path / "g.jpg")]) == 1
    assert "--out must end in .png" in capsys.readouterr().err
    assert main(["gates", str(tmp_path / "none.safetensors")]) == 1
    assert "no such gates file" in capsys.readouterr().err
