"""Multi-view correspondence score (paper Sec. 4.1, App. C.1).

Each token carries a pooled 3-D point; tokens are binned into voxels of ``voxel_size`` metres
(``floor((x - x_min) / s)``). Per voxel and view the tokens are averaged and L2-normalised into a
prototype; the score is the cosine between prototypes of the same voxel from different views,
averaged over all such pairs (``multiview``, pair-weighted), or the released code's adjacent-frame
variant (``adjacent``).

Everything is vectorised and near the cost of reading the features: one stable sort of the tokens'
integer voxel keys groups them by (voxel, view); each voxel's sum of prototypes comes from one
``embedding_bag`` pass over the feature rows (no copy), and the sum of all pairwise dot products inside
a voxel is ``(|sum_t p_t|^2 - sum_t |p_t|^2) / 2``, so no loop runs over voxels or tokens. Memory is
linear in the number of tokens (integer indices and one row per voxel; copies are made a chunk at a time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

PROTOCOLS = ("multiview", "adjacent")
_CHUNK_ELEMENTS = 1 << 24  # feature elements per chunk (64 MiB in fp32)


@dataclass
class CorrespondenceResult:
    """``score`` is NaN when no voxel is seen by two views (multiview) or no adjacent pair shares one.

    ``num_pairs`` counts the cross-view prototype pairs compared and ``num_voxels`` the voxels seen by at
    least two views (for ``adjacent``: (frame pair, voxel) cells seen by both frames, so both are equal).
    ``pair_scores`` (``adjacent`` only) has one entry per adjacent frame pair, NaN where none is shared.
    ``token_scores`` ``[V, N]`` (on request) is each token's mean cosine to the other views' prototypes
    of its voxel: the per-token consistency heat map (NaN where the token has no cross-view partner).
    """

    score: float
    num_pairs: int
    num_voxels: int
    protocol: str
    voxel_size: float
    pair_scores: list[float] | None = None
    token_scores: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        out = {"score": self.score, "num_pairs": self.num_pairs, "num_voxels": self.num_voxels,
               "protocol": self.protocol, "voxel_size": self.voxel_size}
        if self.pair_scores is not None:
            out["pair_scores"] = self.pair_scores
        return out


def correspondence_score(
    features,
    coords,
    valid=None,
    voxel_size: float = 0.1,
    protocol: str = "multiview",
    token_scores: bool = False,
) -> CorrespondenceResult:
    """Score how consistently ``features`` [V, N, C] describe the same 3-D points ``coords`` [V, N, 3].

    ``valid`` [V, N] (bool) keeps only some tokens (e.g. those whose cell has >= 10 % valid depth);
    ``None`` uses every token, which reproduces the paper's unmasked script (``adjacent`` then treats
    every token as valid too).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}")
    if not (isinstance(voxel_size, (int, float)) and math.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size must be a positive number of metres; got {voxel_size!r}")
    features, coords, valid, norms = _validate(features, coords, valid)
    if protocol == "multiview":
        return _multiview(features, norms, coords, valid, float(voxel_size), token_scores)
    return _adjacent(features, norms, coords, valid, float(voxel_size))


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.from_numpy(np.asarray(x))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a tensor or array; got {type(x).__name__} ({error})") from None


def _first_bad(mask: torch.Tensor) -> str:
    view, token = (int(i) for i in mask.nonzero()[0][:2])
    return f"{int(mask.sum())} non-finite value(s), first at view {view}, token {token}"


def _validate(features, coords, valid):
    features = _as_tensor(features, "features")
    coords = _as_tensor(coords, "coords").to(features.device)
    if features.ndim != 3:
        raise ValueError(f"features must be [V, N, C]; got shape {tuple(features.shape)}")
    if features.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        features = features.float()  # sums are accumulated in float32; half types are upcast per chunk
    v, n, c = features.shape
    if v == 0 or n == 0 or c == 0:
        raise ValueError(f"features is empty: shape {tuple(features.shape)}")
    if tuple(coords.shape) != (v, n, 3):
        raise ValueError(f"coords must be [V, N, 3] = {[v, n, 3]} to match features; got {list(coords.shape)}")
    if valid is None:
        valid = torch.ones(v, n, dtype=torch.bool, device=features.device)
    else:
        valid = _as_tensor(valid, "valid").to(features.device)
        if tuple(valid.shape) != (v, n):
            raise ValueError(f"valid must be [V, N] = {[v, n]}; got {list(valid.shape)}")
        if valid.dtype != torch.bool:
            raise TypeError(f"valid must be boolean; got {valid.dtype}")
    if not valid.any():
        raise ValueError("no valid token: the scene is empty or every token is masked out")
    coords = coords.to(torch.float64)
    # The sum of finite coordinates (metres) is finite: one reduction, and the per-token search only on failure.
    if not (bool(valid.all()) and bool(torch.isfinite(coords.sum()))):
        bad = ~torch.isfinite(coords).all(-1) & valid
        if bad.any():
            raise ValueError(f"coords contain {_first_bad(bad)}")
    # Token norms are needed anyway; a non-finite feature makes its norm non-finite, so this one
    # reduction is also the finiteness check (the exact per-value search runs only on failure).
    norms = torch.linalg.vector_norm(features, dim=-1, dtype=torch.float32)
    if not torch.isfinite(norms if bool(valid.all()) else norms[valid]).all():
        bad = ~torch.isfinite(features).all(-1) & valid
        if bad.any():
            raise ValueError(f"features contain {_first_bad(bad)}")
        raise ValueError("features are too large: their norms overflow float32")
    return features, coords, valid, norms


_EPS = 1e-12  # as torch.nn.functional.normalize: a zero sum gives a zero prototype


def _linear_key(cells: torch.Tensor) -> torch.Tensor:
    """One integer per row of non-negative int64 ``cells`` [M, k], ordered as the rows are lexicographically
    (int32 where the extent fits: it sorts ~1.6x faster than int64)."""
    dims = cells.max(0).values + 1
    extent = float(torch.prod(dims.double()))
    if extent < 2.0**62:
        strides = torch.ones_like(dims)
        for i in range(len(dims) - 2, -1, -1):
            strides[i] = strides[i + 1] * dims[i + 1]
        key = (cells * strides).sum(-1)
        return key.to(torch.int32) if extent < 2.0**31 else key
    return torch.unique(cells, dim=0, return_inverse=True)[1]  # huge extents: slower, exact


def _voxel_index(coords: torch.Tensor, x_min: torch.Tensor, voxel_size: float) -> torch.Tensor:
    return (coords - x_min).div_(voxel_size).floor_().to(torch.int64)  # one temporary: these are [R, 3] float64


def _starts(key: torch.Tensor) -> torch.Tensor:
    """Where a run of equal consecutive values of ``key`` begins (bool, the first entry True)."""
    start = torch.ones(len(key), dtype=torch.bool, device=key.device)
    torch.ne(key[1:], key[:-1], out=start[1:])
    return start


def _bag_sums(flat: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``out[b] = sum of weight[i] * flat[index[i]]`` (weight 1 if ``None``) over bag ``b``'s entries
    ``offsets[b]:offsets[b + 1]``.

    ``embedding_bag`` reads each row once, straight from the features (no gather copy, no sort, no sparse
    matrix); half-precision features are upcast a chunk of bags at a time so sums stay float32.
    """
    if flat.dtype == torch.float32:
        return F.embedding_bag(index, flat, offsets, mode="sum", per_sample_weights=weight)
    rows = max(1, _CHUNK_ELEMENTS // flat.shape[1])
    ends = torch.cat([offsets[1:], offsets.new_tensor([len(index)])])
    out, first = [], 0
    while first < len(offsets):
        last = max(first + 1, int(torch.searchsorted(ends, int(offsets[first]) + rows, right=True)))
        lo, hi = int(offsets[first]), int(ends[last - 1])
        part = flat[index[lo:hi]].to(torch.float32)
        out.append(F.embedding_bag(torch.arange(hi - lo, device=flat.device), part, offsets[first:last] - lo,
                                   mode="sum", per_sample_weights=None if weight is None else weight[lo:hi]))
        first = last
    return torch.cat(out)


def _offsets(sorted_bag: torch.Tensor, num_bags: int) -> torch.Tensor:
    """``embedding_bag`` offsets of bags 0..num_bags-1 (some possibly empty) from each entry's sorted bag id."""
    counts = torch.bincount(sorted_bag, minlength=num_bags)
    return counts.cumsum(0) - counts


@dataclass
class _Cells:
    """Tokens grouped into cells (voxels) seen from >= 2 views, and per cell the pair sums.

    A prototype is ``p_g = s_g / |s_g|`` with ``s_g = sum_{t in g} a_t f_t`` over the tokens of one
    (cell, view) group (``a_t = 1``, or ``1 / |f_t|`` when tokens are normalised first), so
    ``p_g = sum_{t in g} w_t f_t`` with ``w_t = a_t / |s_g|``: every token is added straight into its
    cell's sum of prototypes ``P_k``, and the sum of all pairwise dots inside a cell is
    ``(|P_k|^2 - sum_g |p_g|^2) / 2``. Only groups of several tokens need ``s_g`` itself (for its norm).
    """

    token: torch.Tensor  # [T] feature row of each kept token, sorted by (cell, view)
    token_cell: torch.Tensor  # [T]
    token_group: torch.Tensor  # [T]
    group_cell: torch.Tensor  # [G]
    group_norm: torch.Tensor  # [G] |s_g|
    prototype_sq: torch.Tensor  # [G] |p_g|^2: 1, or 0 for a zero sum (float64)
    total: torch.Tensor  # [K, C] P_k
    views: torch.Tensor  # [K] views seeing the cell (>= 2)
    pair_sums: torch.Tensor  # [K] float64

    @property
    def num_pairs(self) -> int:
        return int((self.views * (self.views - 1) // 2).sum())


def _cells(flat, norms, token, key, view, normalise_tokens: bool) -> _Cells | None:
    """Group ``token`` (rows of ``flat``) by ``key`` and ``view``; ``None`` when no cell has two views.

    One stable sort by cell: the tokens come in view order, so each cell's tokens end up grouped by view.
    """
    key, order = torch.sort(key, stable=True)
    token, view = token[order], view[order]
    cell_start = _starts(key)
    group_start = cell_start | _starts(view)  # a new cell or, within one, a new view
    token_cell = cell_start.cumsum(0) - 1
    shared = torch.bincount(token_cell[group_start]) >= 2
    if not bool(shared.any()):
        return None
    if not bool(shared.all()):
        keep = shared[token_cell].nonzero().squeeze(1)
        token, key, view = token[keep], key[keep], view[keep]
        cell_start = _starts(key)
        group_start = cell_start | _starts(view)
        token_cell = cell_start.cumsum(0) - 1
    token_group = group_start.cumsum(0) - 1
    group_first = group_start.nonzero().squeeze(1)
    group_cell = token_cell[group_first]
    group_size = torch.diff(group_first, append=group_first.new_tensor([len(token)]))
    num_cells = int(token_cell[-1]) + 1
    several = group_size > 1
    first_norm = norms[token[group_first]]  # a one-token group's norm |a_t f_t|: 1 (or 0) when normalised
    group_norm = first_norm / first_norm.clamp_min(_EPS) if normalise_tokens else first_norm
    one = token[group_first[~several]]  # tokens alone in their group go into their cell's total with weight 1 / |f_t|
    total = _bag_sums(flat, one, _offsets(group_cell[~several], num_cells), 1.0 / norms[one].clamp_min(_EPS))
    if bool(several.any()):  # each group of several tokens is summed once; its prototype joins the total
        members = token[several[token_group].nonzero().squeeze(1)]
        scale = 1.0 / norms[members].clamp_min(_EPS) if normalise_tokens else None
        _add_group_prototypes(total, flat, members, scale, several.nonzero().squeeze(1), group_size, group_cell, group_norm)
    prototype_sq = (group_norm / group_norm.clamp_min(_EPS)).square().to(torch.float64)
    squares = torch.zeros(num_cells, dtype=torch.float64, device=flat.device).index_add_(0, group_cell, prototype_sq)
    views = torch.bincount(group_cell, minlength=num_cells)
    # a norm, not einsum("kc,kc->k"): that runs as K batched 1xC by Cx1 matmuls
    pair_sums = (torch.linalg.vector_norm(total, dim=-1).to(torch.float64).square() - squares) / 2
    return _Cells(token, token_cell, token_group, group_cell, group_norm, prototype_sq, total, views, pair_sums)


def _add_group_prototypes(total, flat, token, a, groups, group_size, group_cell, group_norm) -> None:
    """Sum each group of several tokens (``groups``, in cell order; ``token`` are their tokens in the same
    order, ``a`` their scales or ``None`` for 1), store its norm in ``group_norm`` and add its prototype to
    its cell's ``total``: a bounded number of groups at a time, so the sums never take more memory than a chunk."""
    sizes = group_size[groups]
    ends = sizes.cumsum(0)
    step = max(1, _CHUNK_ELEMENTS // flat.shape[1])
    for lo in range(0, len(groups), step):
        hi = min(len(groups), lo + step)
        first, last = int(ends[lo] - sizes[lo]), int(ends[hi - 1])
        sums = _bag_sums(flat, token[first:last], ends[lo:hi] - sizes[lo:hi] - first, None if a is None else a[first:last])
        norms = torch.linalg.vector_norm(sums, dim=-1)
        group_norm[groups[lo:hi]] = norms
        cells, local = torch.unique_consecutive(group_cell[groups[lo:hi]], return_inverse=True)
        prototypes = F.embedding_bag(torch.arange(hi - lo, device=flat.device), sums, _offsets(local, len(cells)),
                                     mode="sum", per_sample_weights=1.0 / norms.clamp_min(_EPS))
        total.index_add_(0, cells, prototypes)


def _mean_cosine_to_other_views(flat: torch.Tensor, cells: _Cells, num_tokens: int) -> torch.Tensor:
    """Per feature row: its group's mean cosine to the other views' prototypes in its cell (NaN if none);
    tokens as they are (``multiview``: ``w_t = 1 / |s_g|``)."""
    rows = max(1, _CHUNK_ELEMENTS // flat.shape[1])
    dots = torch.empty(len(cells.token), dtype=torch.float64, device=flat.device)
    for lo in range(0, len(cells.token), rows):  # chunks bound the gathered copy
        hi = min(len(cells.token), lo + rows)
        dots[lo:hi] = ((flat[cells.token[lo:hi]].to(torch.float32) * cells.total[cells.token_cell[lo:hi]]).sum(-1)
                       / cells.group_norm[cells.token_group[lo:hi]].clamp_min(_EPS)).to(torch.float64)
    group_dot = torch.zeros(len(cells.group_cell), dtype=torch.float64, device=flat.device).index_add_(0, cells.token_group, dots)
    mean = (group_dot - cells.prototype_sq) / (cells.views[cells.group_cell] - 1)
    out = torch.full((num_tokens,), float("nan"), dtype=torch.float64, device=flat.device)
    out[cells.token] = mean[cells.token_group]
    return out


def _multiview(features, norms, coords, valid, voxel_size, want_token_scores) -> CorrespondenceResult:
    v, n, c = features.shape
    every = bool(valid.all())
    x_min = (coords.reshape(-1, 3) if every else coords[valid]).amin(0)  # App. C.1: element-wise minimum over the tokens
    token = torch.arange(v * n, device=features.device) if every else valid.reshape(-1).nonzero().squeeze(1)  # view-major
    key = _linear_key(_voxel_index(coords.reshape(-1, 3) if every else coords.reshape(-1, 3)[token], x_min, voxel_size))
    flat = features.reshape(-1, c)
    cells = _cells(flat, norms.reshape(-1), token, key, token // n, normalise_tokens=False)
    if cells is None:  # no voxel seen by two views
        nan_map = torch.full((v, n), float("nan")) if want_token_scores else None
        return CorrespondenceResult(float("nan"), 0, 0, "multiview", voxel_size, token_scores=nan_map)
    num_pairs = cells.num_pairs
    score = float(cells.pair_sums.sum() / num_pairs)
    per_token = _mean_cosine_to_other_views(flat, cells, v * n).reshape(v, n).float() if want_token_scores else None
    return CorrespondenceResult(score, num_pairs, len(cells.views), "multiview", voxel_size, token_scores=per_token)


def _adjacent(features, norms, coords, valid, voxel_size) -> CorrespondenceResult:
    """Released variant: frames (t, t+1), tokens L2-normalised first, x_min over the pair's valid tokens,
    unweighted mean over shared voxels per pair, scene score = mean over pairs with a score."""
    v, n, c = features.shape
    if v < 2:
        return CorrespondenceResult(float("nan"), 0, 0, "adjacent", voxel_size, pair_scores=[])
    inf = torch.full_like(coords, float("inf"))
    view_min = torch.where(valid[..., None], coords, inf).min(1).values  # [V, 3], inf for empty views
    flat, flat_norms = features.reshape(-1, c), norms.reshape(-1)
    pair_sum = torch.zeros(v - 1, dtype=torch.float64, device=features.device)
    pair_count = torch.zeros(v - 1, dtype=torch.int64, device=features.device)
    step = max(1, _CHUNK_ELEMENTS // max(1, 2 * n * c))  # pairs per chunk: each cell belongs to one pair
    for a in range(0, v - 1, step):
        b = min(v - 1, a + step)
        pair = torch.arange(a, b, device=features.device)
        frame = torch.stack([pair, pair + 1], 1)  # [P, 2]: the pair's two frames, side 0 then side 1
        rows = (frame[..., None] * n + torch.arange(n, device=features.device)).reshape(-1)  # pair-, side-, token-major
        keep = valid.reshape(-1)[rows]
        if not bool(keep.any()):
            continue
        rows = rows[keep]
        pair_of = pair.repeat_interleave(2 * n)[keep]
        side = torch.tensor([0, 1], device=features.device).repeat_interleave(n).repeat(b - a)[keep]
        grid = _voxel_index(coords.reshape(-1, 3)[rows], torch.minimum(view_min[pair_of], view_min[pair_of + 1]), voxel_size)
        key = _linear_key(torch.cat([(pair_of - a)[:, None], grid], 1))
        cells = _cells(flat, flat_norms, rows, key, side, normalise_tokens=True)
        if cells is None:
            continue
        first = _starts(cells.token_cell).nonzero().squeeze(1)
        cell_pair = cells.token[first] // n  # a cell's first token is on side 0: its frame is the pair's
        pair_sum.index_add_(0, cell_pair, cells.pair_sums)  # one pair per cell: its cosine
        pair_count.index_add_(0, cell_pair, torch.ones_like(cell_pair))
    scores = torch.where(pair_count > 0, pair_sum / pair_count.clamp_min(1), torch.full_like(pair_sum, float("nan")))
    scored = pair_count > 0
    score = float(scores[scored].mean()) if scored.any() else float("nan")
    total_pairs = int(pair_count.sum())
    return CorrespondenceResult(score, total_pairs, total_pairs, "adjacent", voxel_size, pair_scores=scores.tolist())
