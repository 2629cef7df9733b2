import pytest
import torch

import vega3d
from vega3d.backbones import Backbone, check_frames, load_backbone


def test_registry_lists_baselines_and_rejects_unknown():
    assert {"pixels", "position"} <= set(vega3d.list_backbones())
    with pytest.raises(KeyError, match="unknown backbone 'nope'; available: .*pixels"):
        vega3d.load_backbone("nope")


def test_pixels_is_the_mean_colour_of_each_cell():
    frames = torch.rand(2, 3, 28, 42)
    tokens = load_backbone("pixels", grid=(2, 3))(frames)
    assert tokens.shape == (2, 2, 3, 3)
    torch.testing.assert_close(tokens[1, 1, 2], frames[1, :, 14:, 28:].mean((1, 2)))


def test_position_ignores_content_and_separates_positions():
    a = load_backbone("position")(torch.rand(1, 3, 64, 64))
    b = load_backbone("position")(torch.zeros(1, 3, 64, 64))
    torch.testing.assert_close(a, b)
    assert a.shape == (1, 14, 14, 16)
    flat = torch.nn.functional.normalize(a.reshape(-1, 16), dim=-1)
    cos = flat @ flat.T
    assert float(cos[0, 195]) < 0.5  # opposite corners are far apart


def test_backbones_are_frozen_and_stay_in_eval_mode():
    backbone = load_backbone("pixels")
    backbone.train()
    assert not backbone.training


@pytest.mark.parametrize(
    "frames, error, message",
    [
        (torch.rand(2, 3, 8), ValueError, r"\[T, 3, H, W\]"),
        (torch.rand(2, 4, 8, 8), ValueError, r"\[T, 3, H, W\]"),
        (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), TypeError, "divide uint8 images by 255"),
        (torch.rand(1, 3, 8, 8) * 255, ValueError, r"must lie in \[0, 1\]"),
        (torch.rand(1, 3, 8, 8) * 2 - 1, ValueError, r"must lie in \[0, 1\]"),
        (torch.rand(0, 3, 8, 8), ValueError, "empty"),
    ],
)
def test_frame_contract(frames, error, message):
    with pytest.raises(error, match=message):
        check_frames(frames)


def test_set_options_only_changes_sweepable_options():
    class Toy(Backbone):
        name = "toy"
        sweep_options = ("timestep",)
        timestep = 300

        def encode(self, frames, scene_id=None):
            return frames.new_full((len(frames), 1, 1, 1), float(self.timestep))

    toy = Toy()
    assert float(toy.set_options(timestep=500)(torch.rand(1, 3, 4, 4))) == 500
    with pytest.raises(ValueError, match=r"cannot change \['block'\].*sweepable: \['timestep'\]"):
        toy.set_options(block=3)


def test_weights_are_refused_by_weight_free_backbones():
    with pytest.raises(ValueError, match="has no weights"):
        load_backbone("pixels", weights="some/folder")
