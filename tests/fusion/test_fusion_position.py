"""Position codes, computed here element by element with the math module."""

from __future__ import annotations

import math

import pytest
import torch

from vega3d.fusion import grid_position_code, world_position_code, world_voxel_index


def test_voxel_index_clamps_to_the_box_and_discretises_at_10_cm():
    coords = torch.tensor([[-15.0, 15.0, -5.0], [0.3, -0.05, 0.0], [100.0, -100.0, 7.0], [1.234, 14.99, 4.96]])
    want = torch.tensor([[0, 300, 0], [153, 149, 50], [300, 0, 100], [162, 299, 99]])
    assert torch.equal(world_voxel_index(coords), want)


def hand_world_code(point, dim):
    per_axis = 2 * (dim // 6)
    low = (-15.0, -15.0, -5.0)
    high = (15.0, 15.0, 5.0)
    code = []
    for axis in range(3):
        index = math.floor((min(max(point[axis], low[axis]), high[axis]) - low[axis]) * 10 + 1e-9)
        frequencies = [10000 ** (-2 * i / per_axis) for i in range(per_axis // 2)]
        code += [math.sin(index * f) for f in frequencies] + [math.cos(index * f) for f in frequencies]
    return code + [0.0] * (dim - 3 * per_axis)


@pytest.mark.parametrize("dim, padding", [(3584, 2), (1152, 0), (20, 2)])
def test_world_code_matches_the_formula(dim, padding):
    points = [(1.234, -3.5, 0.71), (-20.0, 15.0, -5.0)]
    code = world_position_code(torch.tensor(points, dtype=torch.float64)[None], dim)
    assert code.shape == (1, 2, dim) and code.dtype == torch.float64
    for row, point in zip(code[0], points):
        torch.testing.assert_close(row, torch.tensor(hand_world_code(point, dim), dtype=torch.float64))
    if padding:
        assert torch.count_nonzero(code[..., -padding:]) == 0


def test_world_code_dtype_and_errors():
    assert world_position_code(torch.zeros(4, 3), 12).dtype == torch.float32
    with pytest.raises(ValueError, match=r"world coordinates must have shape \[\.\.\., 3\]; got \(4, 2\)"):
        world_position_code(torch.zeros(4, 2), 12)
    with pytest.raises(ValueError, match="dim >= 6"):
        world_position_code(torch.zeros(4, 3), 4)


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
