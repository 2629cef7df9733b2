"""The released projectors (merger, avg), the new settings and the released frame resize."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vega3d.models import GenerativeSettings
from vega3d.models.clips import released_resize
from vega3d.models.merger import GenerativeMerger, build_projector


def test_avg_merger_is_the_window_mean_then_the_mlp():
    merger = GenerativeMerger(3, 5, hidden_dim=4, mode="avg")
    tokens = torch.randn(2, 5, 4, 3)  # odd height: the last row is dropped
    mean = tokens[:, :4].reshape(2, 2, 2, 2, 2, 3).mean(dim=(2, 4)).reshape(2, 4, 3)
    torch.testing.assert_close(merger(tokens), merger.mlp[2](F.gelu(merger.mlp[0](mean))))
    assert not hasattr(merger, "ln_q") and merger.mlp[0].weight.shape == (4, 3)
    assert GenerativeMerger(3, 5, hidden_dim=4).mlp[0].weight.shape == (4, 12)  # merger: 4C in


def test_projector_and_settings_errors():
    with pytest.raises(ValueError, match="tokens must be \\[G, H, W, 3\\]"):
        GenerativeMerger(3, 5)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="has no 2x2 window"):
        GenerativeMerger(3, 5)(torch.randn(1, 1, 4, 3))
    with pytest.raises(ValueError, match="unknown generative projector 'conv'"):
        build_projector("conv", 3, 5)
    with pytest.raises(ValueError, match="projector 'mlp' takes no options"):
        build_projector("mlp", 3, 5, hidden_dim=4)
    with pytest.raises(ValueError, match="'visual_input' must be one of"):
        GenerativeSettings(backbone="pixels", feature_dim=3, visual_input="audio")


@pytest.mark.parametrize("size, expected", [((480, 640), (392, 504)), ((640, 480), (504, 504)), ((100, 1036), (56, 504))])
def test_released_resize_sizes(size, expected):
    frames = torch.randint(0, 256, (1, 3, *size)).float() / 255
    out = released_resize(frames)
    assert tuple(out.shape[-2:]) == expected
    assert torch.equal((out * 255).round() / 255, out)  # still 8-bit values: the Qwen and Wan inputs agree


def test_a_new_merger_branch_on_a_plain_checkpoint_keeps_its_own_initialisation(tmp_path):
    from vega3d.models import load_model
    from vega3d.models.tiny import build_tiny_model, save_tiny, tiny_processor

    processor = tiny_processor(image_size=56)
    folder = save_tiny(tmp_path / "plain", processor, build_tiny_model(processor, seed=0))
    settings = GenerativeSettings(backbone="pixels", feature_dim=3, projector="merger", projector_options={"hidden_dim": 8},
                                  fusion="gated", fusion_options={"preset": "residual"}, visual_input="images")
    model = load_model(str(folder), settings)
    fresh = model.model.build_adapter("generative_projector", device="cpu").state_dict()
    for key, value in model.model.generative_projector.state_dict().items():
        torch.testing.assert_close(value, fresh[key], rtol=0, atol=0, msg=key)  # ln_q weight 1, not uninitialised memory
    assert float(model.model.fusion.residual_scale.detach()) == pytest.approx(0.2)
