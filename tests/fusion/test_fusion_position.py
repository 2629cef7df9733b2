"""Position codes, computed here element by element with the math module."""

from __future__ import annotations

import math

import pytest
import torch

from vega3d.fusion import grid_position_code, world_position_code, world_voxel_index
from vega3d.fusion.position import pool_world_coordinates


def test_voxel_index_clamps_to_the_box_and_rounds_at_10_cm():
    coords = torch.tensor([[-15.0, 15.0, -5.0], [0.3, -0.04, 0.0], [100.0, -100.0, 7.0], [1.234, 14.96, 4.96]])
    want = torch.tensor([[0, 300, 0], [153, 150, 50], [300, 0, 100], [162, 300, 100]])
    assert torch.equal(world_voxel_index(coords).long(), want)


def test_voxel_index_in_bf16_reproduces_the_released_rounding():
    # The released run voxelised bf16 coordinates: 12.34 m is stored as 12.3125, and each step rounds again.
    coords = torch.tensor([[12.34, -9.87, 1.23]])
    low = [-15.0, -15.0, -5.0]
    want = []
    for axis in range(3):
        value = torch.tensor(coords[0, axis].item(), dtype=torch.bfloat16)
        value = (value - torch.tensor(low[axis], dtype=torch.bfloat16)) / 0.1
        want.append(torch.round(value).item())
    assert world_voxel_index(coords.bfloat16()).tolist() == [want]
    assert world_voxel_index(coords).tolist() == [[273.0, 51.0, 62.0]] != [want]


def hand_world_code(point, dim):
    """The released PositionEmbeddingSine3D written out per channel with the math module."""
    per_axis = dim // 3
    low, high = (-15.0, -15.0, -5.0), (15.0, 15.0, 5.0)
    code = []
    for axis in range(3):
        voxel = round((min(max(point[axis], low[axis]), high[axis]) - low[axis]) / 0.1)
        for channel in range(per_axis):
            scale = 10000 ** (2 * (channel // 2) / per_axis)
            code.append(math.sin(voxel / scale) if channel % 2 == 0 else math.cos(voxel / scale))
    return code + [0.0] * (dim - 3 * per_axis)


@pytest.mark.parametrize("dim, padding", [(3584, 2), (1152, 0), (64, 1)])
def test_world_code_matches_the_formula(dim, padding):
    points = [(1.234, -3.5, 0.71), (-20.0, 15.0, -5.0)]
    code = world_position_code(torch.tensor(points)[None], dim)
    assert code.shape == (1, 2, dim) and code.dtype == torch.float32
    for row, point in zip(code[0], points):
        torch.testing.assert_close(row, torch.tensor(hand_world_code(point, dim)), atol=5e-5, rtol=0)  # fp32 angles up to 300 rad
    if padding:
        assert torch.count_nonzero(code[..., -padding:]) == 0
    if dim == 3584:  # x fills 0-1193, y 1194-2387, z 2388-3581 (fact 13)
        x_of_voxel_0 = code[0, 1, :1194]  # the second point's x is clamped to -15 m: voxel 0, sin 0 / cos 1
        assert (x_of_voxel_0[0::2] == 0).all() and (x_of_voxel_0[1::2] == 1).all()
        assert code[0, 1, 1194].item() == pytest.approx(math.sin(300), abs=1e-5)  # its y (15 m) starts at 1194


def test_world_code_dtype_and_errors():
    assert world_position_code(torch.zeros(4, 3), 12).dtype == torch.float32
    assert world_position_code(torch.zeros(4, 3, dtype=torch.bfloat16), 12).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"world coordinates must have shape \[\.\.\., 3\]; got \(4, 2\)"):
        world_position_code(torch.zeros(4, 2), 12)
    with pytest.raises(ValueError, match="dim >= 6"):
        world_position_code(torch.zeros(4, 3), 4)


def test_token_coordinates_crop_then_average_27_pixel_blocks():
    world = torch.randn(2, 384, 384, 3, generator=torch.Generator().manual_seed(0))
    pooled = pool_world_coordinates(world, 14, (14, 14))
    assert pooled.shape == (2, 14, 14, 3)
    torch.testing.assert_close(pooled[1, 3, 5], world[1, 81:108, 135:162].mean(dim=(0, 1)))
    torch.testing.assert_close(pooled[0, 13, 13], world[0, 351:378, 351:378].mean(dim=(0, 1)))  # rows 378-383 dropped


def test_grid_code_rows_then_columns():
    code = grid_position_code(2, 3, 8)
    assert code.shape == (6, 8)
    for token in range(6):
        row, col = divmod(token, 3)
        want = [math.sin(row), math.sin(row / 100), math.cos(row), math.cos(row / 100),
                math.sin(col), math.sin(col / 100), math.cos(col), math.cos(col / 100)]
        torch.testing.assert_close(code[token], torch.tensor(want))
    with pytest.raises(ValueError, match="divisible by 4"):
        grid_position_code(2, 2, 6)
