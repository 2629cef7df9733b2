"""Compiled loops behind the correspondence score (numba; compiled once, then cached on disk).

Tokens arrive view-major (``t = view * n + i``), so every (voxel, view) group lies inside one view and
the features can be read in order: each token's row is normed, and summed into its group or its voxel's
sum of prototypes, while it is in cache (long single-token rows are added in a second, prefetched pass:
``finish``). Nothing is sorted: voxels get dense ids in first-seen order from a lookup table over the
scene's voxel grid.
"""

from __future__ import annotations

import warnings

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

EPS = 1e-12  # as torch.nn.functional.normalize: x / max(|x|, EPS)
_FAST = {"reassoc", "contract"}  # lets sums vectorise; NaN and inf still propagate (no "nnan"/"ninf")
_PREFETCH_BYTES = 8192  # how far ahead rows read out of memory order are requested


def _compiled(**options):
    """``numba.njit`` with the compiled code cached on disk (next to this file, or in numba's user cache
    folder, or ``NUMBA_CACHE_DIR``); where none of them is writable, compiled in each process instead (about
    10 s on first use), with one warning."""

    def decorate(function):
        try:
            return njit(cache=True, nogil=True, **options)(function)
        except RuntimeError as error:  # numba finds no cache location at decoration time
            if not _compiled.warned:
                warnings.warn(f"vega3d: the correspondence loops cannot be cached ({error}); they are compiled "
                              "in every process. Set NUMBA_CACHE_DIR to a writable folder to cache them.", stacklevel=2)
                _compiled.warned = True
            return njit(nogil=True, **options)(function)

    return decorate


_compiled.warned = False


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


@_compiled(inline="always")
def _prefetch_row(rows, r):
    flat = rows.reshape(-1)
    for j in range(r * rows.shape[1], (r + 1) * rows.shape[1], 16):  # one hint per 64-byte line
        _prefetch(flat, j)


@_compiled()
def table_voxel_ids(coords, valid, voxel_size, max_entries):
    """Voxel id of every valid token, ``floor((x - x_min) / s)`` per axis with ``x_min`` the element-wise
    minimum of the valid rows of ``coords`` [T, 3] (float64), numbered in first-seen order through a lookup
    table over the grid; -1 for invalid tokens. Returns (ids int32 [T], count), count -1 (ids all -1) when
    the grid has more than ``max_entries`` cells."""
    ids = np.full(coords.shape[0], -1, np.int32)
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for t in range(coords.shape[0]):
        if valid[t]:
            for d in range(3):
                lo[d] = min(lo[d], coords[t, d])
                hi[d] = max(hi[d], coords[t, d])
    dims = np.floor((hi - lo) / voxel_size) + 1
    if not dims[0] * dims[1] * dims[2] <= max_entries:
        return ids, -1
    extent = dims.astype(np.int64)
    table = np.full(extent[0] * extent[1] * extent[2], -1, np.int32)
    count = 0
    for t in range(coords.shape[0]):
        if not valid[t]:
            continue
        key = 0
        for d in range(3):
            key = key * extent[d] + int(np.floor((coords[t, d] - lo[d]) / voxel_size))
        if table[key] < 0:
            table[key] = count
            count += 1
        ids[t] = table[key]
    return ids, count


@_compiled()
def group_tokens(ids, n, num_voxels, buffer_all):
    """Group the tokens by (voxel, view). Returns per voxel the number of views seeing it, per token its
    group (-1 if invalid), per group its size and voxel; per voxel its ``slot`` among those seen by >= 2
    views (-1 if not), per slot its ``buffer`` row (-1 if none: only voxels with a multi-token group need
    one, unless ``buffer_all``), the number of buffer rows and of cross-view pairs. Groups are numbered in
    token order, so the groups of one view form a contiguous range."""
    last_view = np.full(num_voxels, -1, np.int64)
    current = np.empty(num_voxels, np.int32)
    views = np.zeros(num_voxels, np.int32)
    multi = np.zeros(num_voxels, np.bool_)
    group = np.full(ids.shape[0], -1, np.int32)
    size = np.zeros(ids.shape[0], np.int32)
    group_voxel = np.empty(ids.shape[0], np.int32)
    count = 0
    for view in range(ids.shape[0] // n):
        for t in range(view * n, view * n + n):
            k = ids[t]
            if k < 0:
                continue
            if last_view[k] != view:
                last_view[k] = view
                views[k] += 1
                current[k] = count
                group_voxel[count] = k
                count += 1
            group[t] = current[k]
            size[current[k]] += 1
            multi[k] |= size[current[k]] > 1
    slot = np.full(num_voxels, -1, np.int32)
    buffer = np.empty(num_voxels, np.int32)
    shared = rows = pairs = 0
    for k in range(num_voxels):
        if views[k] >= 2:
            slot[k] = shared
            buffer[shared] = rows if buffer_all or multi[k] else -1
            rows += buffer[shared] >= 0
            shared += 1
            pairs += np.int64(views[k]) * (views[k] - 1) // 2
    return views, group, size[:count], group_voxel[:count], slot, buffer[:shared], rows, pairs


@_compiled(inline="always")
def _square(x):
    return x * x


@_compiled(fastmath=_FAST, inline="always")
def _norm(row):
    return np.sqrt(_dot(row, row))


@_compiled(fastmath=_FAST, inline="always")
def _dot(a, b):
    acc = np.float32(0.0)
    for j in range(a.shape[0]):
        acc += a[j] * b[j]
    return acc


@_compiled(fastmath=_FAST, inline="always")
def _add_scaled(out, row, scale, started):
    """``out += row * scale``, or ``out = row * scale`` when not ``started``."""
    if started:
        for j in range(row.shape[0]):
            out[j] += row[j] * scale
    else:
        for j in range(row.shape[0]):
            out[j] = row[j] * scale


@_compiled(fastmath=_FAST, inline="always")
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


@_compiled(fastmath=_FAST)
def accumulate(rows, first, n, ids, group, size, group_voxel, slot, normalise, defer, sums, norms, group_norm):
    """First pass: read feature ``rows`` [R, C] (float32, tokens ``first .. first + R``, whole views) once.

    Writes every valid token's norm into ``norms`` and, for voxels seen by >= 2 views (``slot`` >= 0),
    each (voxel, view) group's ``|s_g|`` into ``group_norm`` and ``|p_g|^2`` (``p_g = s_g / |s_g|``) into
    ``sums``' ``sq``. ``s_g`` sums the group's rows, each L2-normalised first when ``normalise``. A group of
    several tokens is summed in a scratch row taken when its first token comes and given back when its last
    one has (groups are compact in the image, so few are open at once and the scratch stays in cache); its
    prototype then goes into its voxel's buffer row. A single token's prototype goes there too, unless
    ``defer`` leaves it to ``finish``.
    """
    buffer, total, started, sq = sums
    scratch = np.empty((n, rows.shape[1]), np.float32)
    free = np.arange(n)  # a stack of scratch rows
    top = n
    where = np.empty(n, np.int64)  # per group of the current view (by its offset from the view's first)
    seen = np.zeros(n, np.int32)
    for start in range(0, rows.shape[0], n):
        g0 = -1
        for r in range(start, start + n):
            t = first + r
            if ids[t] < 0:
                continue
            row = rows[r]
            g = group[t]
            if g0 < 0:
                g0 = g  # groups are numbered in first-seen order: the view's first is its smallest
            s = slot[ids[t]]
            if s >= 0 and size[g] > 1:
                local = g - g0
                if seen[local] == 0:
                    top -= 1
                    where[local] = free[top]
                out = scratch[where[local]]
                if normalise:
                    norm = _norm(row)
                    _add_scaled(out, row, np.float32(1.0) / max(norm, np.float32(EPS)), seen[local] > 0)
                else:  # the row is summed as it is normed: one read
                    norm = _norm_and_add(out, row, seen[local] > 0)
                norms[t] = norm
                seen[local] += 1
                if seen[local] == size[g]:  # the group is complete: its prototype joins its voxel
                    seen[local] = 0
                    free[top] = where[local]
                    top += 1
                    total_norm = _norm(out)
                    inv = np.float32(1.0) / max(total_norm, np.float32(EPS))
                    group_norm[g] = total_norm
                    sq[s] += _square(np.float64(total_norm) * inv)
                    _add_scaled(total[buffer[s]], out, inv, started[s])
                    started[s] = True
                continue
            norm = _norm(row)
            norms[t] = norm
            if s < 0:
                continue
            inv = np.float32(1.0) / max(norm, np.float32(EPS))
            group_norm[g] = norm * inv if normalise else norm
            sq[s] += _square(np.float64(norm) * inv)
            if not defer:
                _add_scaled(total[buffer[s]], row, inv, started[s])
                started[s] = True


@_compiled()
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


@_compiled(fastmath=_FAST)
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


@_compiled(fastmath=_FAST)
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
