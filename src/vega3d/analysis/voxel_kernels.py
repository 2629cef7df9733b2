"""Compiled loops behind the correspondence score (numba; compiled once, then cached on disk).

Tokens arrive view-major (``t = view * n + i``), so every (voxel, view) group lies inside one view and
the features can be read once, in order: each token's row is normed and added straight into its voxel's
sum of prototypes while it is in cache. Nothing is sorted: voxels get dense ids in first-seen order from a
lookup table over the scene's voxel grid.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

EPS = 1e-12  # as torch.nn.functional.normalize: x / max(|x|, EPS)
_FAST = {"reassoc", "contract"}  # lets sums vectorise; NaN and inf still propagate (no "nnan"/"ninf")
_PREFETCH_BYTES = 8192  # how far ahead rows read out of memory order are requested


@intrinsic
def _prefetch(typingctx, array, index):
    """Hint the CPU to start loading ``array[index]`` (1-D) into cache (LLVM's prefetch: read, keep)."""

    def codegen(context, builder, signature, args):
        pointer = cgutils.get_item_pointer(context, builder, signature.args[0],
                                           context.make_array(signature.args[0])(context, builder, args[0]), [args[1]])
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@njit(cache=True, nogil=True)
def _prefetch_row(rows, r):
    flat = rows.reshape(-1)
    for j in range(r * rows.shape[1], (r + 1) * rows.shape[1], 16):  # one hint per 64-byte line
        _prefetch(flat, j)


@njit(cache=True, nogil=True)
def voxel_bounds(coords, valid):
    """Element-wise min and max of the valid rows of ``coords`` [T, 3] (float64)."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for t in range(coords.shape[0]):
        if valid[t]:
            for d in range(3):
                lo[d] = min(lo[d], coords[t, d])
                hi[d] = max(hi[d], coords[t, d])
    return lo, hi


@njit(cache=True, nogil=True)
def dense_voxel_ids(coords, valid, lo, voxel_size, dims):
    """Voxel id of every valid token (``floor((x - lo) / s)`` per axis), numbered in first-seen order;
    -1 for invalid tokens. ``dims`` is the grid's extent per axis; returns (ids int32 [T], count)."""
    table = np.full(dims[0] * dims[1] * dims[2], -1, np.int32)
    ids = np.full(coords.shape[0], -1, np.int32)
    count = 0
    for t in range(coords.shape[0]):
        if not valid[t]:
            continue
        key = 0
        for d in range(3):
            key = key * dims[d] + int(np.floor((coords[t, d] - lo[d]) / voxel_size))
        if table[key] < 0:
            table[key] = count
            count += 1
        ids[t] = table[key]
    return ids, count


@njit(cache=True, nogil=True)
def group_tokens(ids, n, num_voxels):
    """Group the tokens by (voxel, view). Returns per voxel the number of views seeing it, per token its
    group (-1 if invalid), per group its size and voxel. Groups are numbered in token order, so the
    groups of one view form a contiguous range."""
    last_view = np.full(num_voxels, -1, np.int64)
    current = np.empty(num_voxels, np.int32)
    views = np.zeros(num_voxels, np.int32)
    group = np.full(ids.shape[0], -1, np.int32)
    size = np.zeros(ids.shape[0], np.int32)
    group_voxel = np.empty(ids.shape[0], np.int32)
    count = 0
    for t in range(ids.shape[0]):
        k = ids[t]
        if k < 0:
            continue
        if last_view[k] != t // n:
            last_view[k] = t // n
            views[k] += 1
            current[k] = count
            group_voxel[count] = k
            count += 1
        group[t] = current[k]
        size[current[k]] += 1
    return views, group, size[:count], group_voxel[:count]


@njit(cache=True, nogil=True, fastmath=_FAST)
def _norm(row):
    return np.sqrt(_dot(row, row))


@njit(cache=True, nogil=True, fastmath=_FAST)
def _dot(a, b):
    acc = np.float32(0.0)
    for j in range(a.shape[0]):
        acc += a[j] * b[j]
    return acc


@njit(cache=True, nogil=True, fastmath=_FAST)
def _add_scaled(out, row, scale, started):
    """``out += row * scale``, or ``out = row * scale`` when not ``started``."""
    if started:
        for j in range(row.shape[0]):
            out[j] += row[j] * scale
    else:
        for j in range(row.shape[0]):
            out[j] = row[j] * scale


@njit(cache=True, nogil=True, fastmath=_FAST)
def _norm_and_add(out, row, started):
    """``|row|``, adding ``row`` to ``out`` (or writing it there when not ``started``) in the same loop."""
    acc = np.float32(0.0)
    if started:
        for j in range(row.shape[0]):
            acc += row[j] * row[j]
            out[j] += row[j]
    else:
        for j in range(row.shape[0]):
            acc += row[j] * row[j]
            out[j] = row[j]
    return np.sqrt(acc)


@njit(cache=True, nogil=True, fastmath=_FAST)
def accumulate(rows, first, n, ids, group, size, group_voxel, slot, normalise, defer, sums, norms, group_norm):
    """First pass: read feature ``rows`` [R, C] (float32, tokens ``first .. first + R``, whole views) once.

    Writes every valid token's norm into ``norms`` and, for voxels seen by >= 2 views (``slot`` >= 0),
    each (voxel, view) group's ``|s_g|`` into ``group_norm`` and ``|p_g|^2`` (``p_g = s_g / |s_g|``) into
    ``sums``' ``sq``. ``s_g`` sums the group's rows, each L2-normalised first when ``normalise``; a group of
    several tokens is summed in a per-view scratch row and its prototype added to its voxel's buffer row.
    A single token's prototype is added there too, unless ``defer`` leaves it to ``finish``.
    """
    buffer, total, started, sq = sums
    c = rows.shape[1]
    scratch = np.empty((n, c), np.float32)
    touched = np.zeros(n, np.bool_)
    for start in range(0, rows.shape[0], n):
        g0, g1 = -1, -1
        for r in range(start, start + n):
            t = first + r
            if ids[t] < 0:
                continue
            row = rows[r]
            g = group[t]
            if g0 < 0:
                g0 = g
            g1 = max(g1, g + 1)
            s = slot[ids[t]]
            if s >= 0 and size[g] > 1 and not normalise:  # the row is summed as it is normed: one read
                norms[t] = _norm_and_add(scratch[g - g0], row, touched[g - g0])
                touched[g - g0] = True
                continue
            norm = _norm(row)
            norms[t] = norm
            if s < 0:
                continue
            inv = np.float32(1.0) / max(norm, np.float32(EPS))
            if size[g] == 1:
                group_norm[g] = norm * inv if normalise else norm
                sq[s] += (np.float64(norm) * inv) ** 2
                if not defer:
                    _add_scaled(total[buffer[s]], row, inv, started[s])
                    started[s] = True
                continue
            _add_scaled(scratch[g - g0], row, inv, touched[g - g0])
            touched[g - g0] = True
        for g in range(max(g0, 0), g1):
            if touched[g - g0]:
                touched[g - g0] = False
                s = slot[group_voxel[g]]
                norm = _norm(scratch[g - g0])
                inv = np.float32(1.0) / max(norm, np.float32(EPS))
                group_norm[g] = norm
                sq[s] += (np.float64(norm) * inv) ** 2
                _add_scaled(total[buffer[s]], scratch[g - g0], inv, started[s])
                started[s] = True


@njit(cache=True, nogil=True)
def single_tokens(ids, group, size, slot, num_slots):
    """The tokens alone in their group in a shared voxel, bucketed by slot: (starts [S + 1], tokens)."""
    starts = np.zeros(num_slots + 1, np.int64)
    for t in range(ids.shape[0]):
        if ids[t] >= 0 and slot[ids[t]] >= 0 and size[group[t]] == 1:
            starts[slot[ids[t]] + 1] += 1
    for s in range(num_slots):
        starts[s + 1] += starts[s]
    fill = starts[:-1].copy()
    tokens = np.empty(starts[-1], np.int64)
    for t in range(ids.shape[0]):
        if ids[t] >= 0 and slot[ids[t]] >= 0 and size[group[t]] == 1:
            tokens[fill[slot[ids[t]]]] = t
            fill[slot[ids[t]]] += 1
    return starts, tokens


@njit(cache=True, nogil=True, fastmath=_FAST)
def finish(rows, starts, tokens, norms, sums):
    """Second pass, per shared voxel: ``P_k`` = its buffer row plus its deferred single tokens' prototypes
    (``starts``/``tokens``; rows read again in voxel order, summed in cache) and the sum of its prototypes'
    pairwise dots ``(|P_k|^2 - sum_g |p_g|^2) / 2``. Buffered voxels keep ``P_k`` in their row."""
    buffer, total, started, sq = sums
    local = np.empty(rows.shape[1], np.float32)
    pair = np.empty(len(sq))
    ahead = max(1, _PREFETCH_BYTES // (4 * rows.shape[1]))  # rows in flight: enough bytes to hide the latency
    for s in range(len(sq)):
        if buffer[s] >= 0 and started[s]:
            local[:] = total[buffer[s]]
        else:
            local[:] = 0
        for i in range(starts[s], starts[s + 1]):
            t = tokens[i]
            if i + ahead < len(tokens):  # rows come in voxel order, not memory order: load them early
                _prefetch_row(rows, tokens[i + ahead])
            _add_scaled(local, rows[t], np.float32(1.0) / max(norms[t], np.float32(EPS)), True)
        if buffer[s] >= 0:
            total[buffer[s]] = local
        square = 0.0  # float64: the pair sum is a difference of two such squares
        for j in range(local.shape[0]):
            square += np.float64(local[j]) * local[j]
        pair[s] = (square - sq[s]) / 2
    return pair


@njit(cache=True, nogil=True, fastmath=_FAST)
def group_dots(rows, first, ids, group, slot, total, out):
    """``out[g] += f_t . total[slot]`` over each valid token ``t`` of ``rows`` in a shared voxel (every
    shared voxel buffered, in slot order)."""
    for r in range(rows.shape[0]):
        t = first + r
        if ids[t] < 0 or slot[ids[t]] < 0:
            continue
        out[group[t]] += _dot(rows[r], total[slot[ids[t]]])


def compile_all() -> None:
    """Compile every loop for the argument types the score uses: numba caches them next to this file, so
    later processes load them in well under a second (``make install`` runs this once)."""
    import torch

    from vega3d.analysis.correspondence import correspondence_score

    features, coords = torch.randn(2, 4, 3), torch.zeros(2, 4, 3)
    for dtype in (torch.float32, torch.float64):
        correspondence_score(features.to(dtype), coords, token_scores=True)
        correspondence_score(features.to(dtype), coords, protocol="adjacent")
