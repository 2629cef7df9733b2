"""Compiled loops behind the correspondence score (numba; compiled once, then cached on disk).

Tokens arrive view-major (``t = view * n + i``), so every (voxel, view) group lies inside one view and
the features are read once, in order: each token's row is normed and summed into its group or its voxel's
sum of prototypes while it is in cache. A voxel's sum lives in a pooled row from its first token to its
last, where its pair sum is taken and the row given back, so only the rows of voxels in view stay in use.
Nothing is sorted: voxels get dense ids in first-seen order from a lookup table over the scene's voxel grid.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from vega3d.compiled import FAST_MATH as _FAST
from vega3d.compiled import compiled as _compiled

EPS = 1e-12  # as torch.nn.functional.normalize: x / max(|x|, EPS)
STREAM_AHEAD_BYTES = 16384  # how far ahead of the read 1-3 KiB feature rows are requested (measured)


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
def table_voxel_ids(coords, valid, voxel_size, max_entries, ids):
    """Write into ``ids`` (int32 [T]) the voxel id of every valid token, ``floor((x - x_min) / s)`` per axis
    with ``x_min`` the element-wise minimum of the valid rows of ``coords`` [T, 3] (float64), numbered in
    first-seen order through a lookup table over the grid, and -1 for invalid tokens. Returns the number of
    voxels, or -1 (ids all -1) when the grid has more than ``max_entries`` cells."""
    lo0 = lo1 = lo2 = np.inf  # scalars, not arrays: they stay in registers
    hi0 = hi1 = hi2 = -np.inf
    for t in range(coords.shape[0]):
        if valid[t]:
            lo0, hi0 = min(lo0, coords[t, 0]), max(hi0, coords[t, 0])
            lo1, hi1 = min(lo1, coords[t, 1]), max(hi1, coords[t, 1])
            lo2, hi2 = min(lo2, coords[t, 2]), max(hi2, coords[t, 2])
    d0 = np.floor((hi0 - lo0) / voxel_size) + 1
    d1 = np.floor((hi1 - lo1) / voxel_size) + 1
    d2 = np.floor((hi2 - lo2) / voxel_size) + 1
    if not d0 * d1 * d2 <= max_entries:
        ids[:] = -1
        return -1
    e1, e2 = np.int64(d1), np.int64(d2)
    table = np.full(np.int64(d0) * e1 * e2, -1, np.int32)
    count = 0
    for t in range(coords.shape[0]):
        if not valid[t]:
            ids[t] = -1
            continue
        key = ((np.int64(np.floor((coords[t, 0] - lo0) / voxel_size)) * e1
                + np.int64(np.floor((coords[t, 1] - lo1) / voxel_size))) * e2
               + np.int64(np.floor((coords[t, 2] - lo2) / voxel_size)))
        if table[key] < 0:
            table[key] = count
            count += 1
        ids[t] = table[key]
    return count


@_compiled()
def group_tokens(ids, n, num_voxels, group, size, group_voxel):
    """Group the tokens by (voxel, view), writing per token its ``group`` (-1 if invalid) and per group its
    ``size`` and voxel (``group_voxel``; all three int32 [T], only the first ``count`` group entries are
    written). Returns per voxel the number of views seeing it, its first and last tokens and its ``slot``
    among those seen by >= 2 views (-1 if not); the numbers of groups, of such voxels, of them in view at
    once (the pooled rows ``accumulate`` needs) and of cross-view pairs. Groups are numbered in token order, so the
    groups of one view form a contiguous range."""
    current = np.full(num_voxels, -1, np.int32)  # the voxel's newest group
    views = np.zeros(num_voxels, np.int32)
    first = np.empty(num_voxels, np.int64)
    last = np.empty(num_voxels, np.int64)
    count = 0
    for view in range(ids.shape[0] // n):
        first_group = count
        for t in range(view * n, view * n + n):
            k = ids[t]
            if k < 0:
                group[t] = -1
                continue
            g = current[k]
            if g < first_group:  # the voxel's first token in this view opens a group
                if views[k] == 0:
                    first[k] = t
                views[k] += 1
                g = current[k] = count
                group_voxel[g] = k
                size[g] = 0
                count += 1
            group[t] = g
            size[g] += 1
            last[k] = t
    slot = np.full(num_voxels, -1, np.int32)
    shared = pairs = 0
    for k in range(num_voxels):
        if views[k] >= 2:
            slot[k] = shared
            shared += 1
            pairs += np.int64(views[k]) * (views[k] - 1) // 2
    return views, first, last, slot, count, shared, most_in_view(first, last, slot, n, ids.shape[0] // n), pairs


@_compiled()
def most_in_view(first, last, slot, n, num_views):
    """An upper bound on the voxels with a ``slot`` in view at once (voxel k from token ``first[k]`` to
    ``last[k]``, ``n`` tokens a view): the most whose views ``first // n .. last // n`` share one view.
    One count per view: no sort."""
    change = np.zeros(num_views + 1, np.int64)
    for k in range(len(first)):
        if slot[k] >= 0:
            change[first[k] // n] += 1
            change[last[k] // n + 1] -= 1
    most = now = 0
    for v in range(num_views):
        now += change[v]
        most = max(most, now)
    return most


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


@_compiled(fastmath=_FAST, inline="always")
def _add_last(out, row):
    """``out += row``; returns ``(|row|, |out|)`` of the row and of the updated ``out``, in one loop."""
    acc = np.float32(0.0)
    total = np.float32(0.0)
    for j in range(row.shape[0]):
        x = row[j]
        acc += x * x
        y = out[j] + x
        out[j] = y
        total += y * y
    return np.sqrt(acc), np.sqrt(total)


@_compiled(fastmath=_FAST)
def accumulate(rows, first, n, ids, last, group, size, slot, normalise, keep, stream_ahead, sums, group_norm,
               across_parts):
    """Read feature ``rows`` [R, C] (float32, tokens ``first .. first + R``, whole views) once.

    Returns the sum of the valid tokens' norms (non-finite if any feature is). For voxels seen by >= 2
    views (``slot`` >= 0) writes each (voxel, view) group's ``|s_g|`` into ``group_norm`` and each voxel's
    sum of its prototypes' pairwise dots ``(|P_k|^2 - sum_g |p_g|^2) / 2`` into ``sums``' ``pair``
    (``p_g = s_g / |s_g|``, ``P_k`` the sum of the voxel's ``p_g``). ``s_g`` sums the group's rows, each
    L2-normalised first when ``normalise``.

    A group of several tokens is summed in a scratch row taken at its first token and given back at its
    last (groups are compact in the image: few are open at once). ``P_k`` is summed in row ``row_of[slot]``
    of ``total``, taken from the ``free`` stack at the voxel's first prototype and given back after its
    last token; with ``keep``, row = slot and every ``P_k`` is kept. ``stream_ahead`` > 0 requests
    the row that many ahead of the read (1-3 KiB rows, which the hardware alone fetches too late).

    When the views are split into parts read on several threads, ``rows`` are one part's, and a voxel seen
    in several parts (``across_parts[slot]``) keeps its row after its last token, with no ``pair``: its
    parts' rows and ``sq`` are combined afterwards (:func:`pairs_across_parts`).
    """
    total, row_of, free, top, sq, pair = sums
    scratch = np.empty((n, rows.shape[1]), np.float32)
    scratch_free = np.arange(n)  # a stack of scratch rows
    scratch_top = n
    where = np.empty(n, np.int64)  # per group of the current view (by its offset from the view's first)
    seen = np.zeros(n, np.int32)
    norm_sum = 0.0
    for start in range(0, rows.shape[0], n):
        g0 = -1
        for r in range(start, start + n):
            if stream_ahead and r + stream_ahead < rows.shape[0]:
                _prefetch_row(rows, r + stream_ahead)
            t = first + r
            k = ids[t]
            if k < 0:
                continue
            row = rows[r]
            g = group[t]
            if g0 < 0:
                g0 = g  # groups are numbered in first-seen order: the view's first is its smallest
            s = slot[k]
            if s < 0:
                norm_sum += _norm(row)
                continue
            if size[g] > 1:
                local = g - g0
                if seen[local] == 0:
                    scratch_top -= 1
                    where[local] = scratch_free[scratch_top]
                out = scratch[where[local]]
                complete = seen[local] + 1 == size[g]
                if normalise:
                    norm = _norm(row)
                    _add_scaled(out, row, np.float32(1.0) / max(norm, np.float32(EPS)), seen[local] > 0)
                    prototype_norm = _norm(out) if complete else np.float32(0.0)
                elif complete:  # the last row: added and the sum normed in the same loop
                    norm, prototype_norm = _add_last(out, row)
                else:  # the row is summed as it is normed: one read
                    norm = _norm_and_add(out, row, seen[local] > 0)
                norm_sum += norm
                seen[local] += 1
                if not complete:
                    continue
                seen[local] = 0  # the group is complete: its prototype joins its voxel
                scratch_free[scratch_top] = where[local]
                scratch_top += 1
                prototype = out
                group_norm[g] = prototype_norm
            else:
                norm = _norm(row)
                norm_sum += norm
                prototype, prototype_norm = row, norm
                group_norm[g] = norm * (np.float32(1.0) / max(norm, np.float32(EPS))) if normalise else norm
            inv = np.float32(1.0) / max(prototype_norm, np.float32(EPS))
            sq[s] += _square(np.float64(prototype_norm) * inv)
            b = row_of[s]
            started = b >= 0
            if not started:
                if keep:
                    b = s
                else:
                    top[0] -= 1
                    b = free[top[0]]
                row_of[s] = b
            _add_scaled(total[b], prototype, inv, started)
            if t == last[k] and not across_parts[s]:  # its pair sum, in float64 (a difference of two squares)
                square = 0.0
                for j in range(total.shape[1]):
                    square += np.float64(total[b, j]) * total[b, j]
                pair[s] = (square - sq[s]) / 2
                if not keep:
                    free[top[0]] = b
                    top[0] += 1
    return norm_sum


@_compiled(fastmath=_FAST)
def group_dots(rows, first, ids, group, slot, total, out):
    """``out[g] += f_t . total[slot]`` over each valid token ``t`` of ``rows`` in a shared voxel (``total``:
    every ``P_k`` kept, in slot order)."""
    for r in range(rows.shape[0]):
        t = first + r
        if ids[t] < 0 or slot[ids[t]] < 0:
            continue
        out[group[t]] += _dot(rows[r], total[slot[ids[t]]])


@_compiled(fastmath=_FAST)
def pairs_across_parts(totals, row_of, sq, slots, pair):
    """``pair[s] = (|sum_p P_p|^2 - sum_p sq_p) / 2`` for each voxel slot ``s`` in ``slots`` seen in several
    parts: ``P_p`` is row ``row_of[p, s]`` of part ``p``'s ``totals[p]`` (-1: the part does not see it)."""
    row = np.empty(totals.shape[2])
    for s in slots:
        row[:] = 0.0
        squares = 0.0
        for p in range(totals.shape[0]):
            b = row_of[p, s]
            if b < 0:
                continue
            squares += sq[p, s]
            for j in range(row.shape[0]):
                row[j] += totals[p, b, j]
        square = 0.0
        for j in range(row.shape[0]):
            square += row[j] * row[j]
        pair[s] = (square - squares) / 2
