"""The compiled loop behind :func:`vega3d.scenes.geometry.depth_token_coordinates`: pooling depth maps
over pixel rows, a band of rows per token row (numba; compiled once, then cached on disk)."""

from __future__ import annotations

import numpy as np

from vega3d.compiled import FAST_MATH, compiled


@compiled(fastmath=FAST_MATH)
def pool_rows(depth, valid, weights, first, last, ignore_invalid, out, out_valid):
    """``out[t, r] = sum_y weights[r, y] * depth[t, y]`` for the ``2h`` rows of ``weights`` [2h, H] and
    ``out_valid[t, r] = sum_y weights[r, y] * valid[t, y]`` for the first ``h``; ``y`` runs over
    ``first[r] .. last[r]``, the band where row ``r`` and row ``h + r`` of ``weights`` are non-zero.
    ``depth`` [T, H, W] float32, ``valid`` [T, H, W] bool; ``ignore_invalid`` weights invalid pixels 0.
    Only the bands are read (a pixel row by the one or two token rows that cover it), and no masked copy
    of the depth is made."""
    cells, zero = out_valid.shape[1], np.float32(0.0)
    for t in range(depth.shape[0]):
        for r in range(cells):
            depth_sum, ray_sum, valid_sum = out[t, r], out[t, cells + r], out_valid[t, r]
            depth_sum[:] = 0.0
            ray_sum[:] = 0.0
            valid_sum[:] = 0.0
            for y in range(first[r], last[r]):
                a, b = weights[r, y], weights[cells + r, y]
                row, mask = depth[t, y], valid[t, y]
                for x in range(row.shape[0]):
                    d = row[x] if mask[x] or not ignore_invalid else zero
                    depth_sum[x] += a * d
                    ray_sum[x] += b * d
                    valid_sum[x] += a if mask[x] else zero
