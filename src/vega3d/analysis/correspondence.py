"""Multi-view correspondence score (paper Sec. 4.1, App. C.1).

Each token carries a pooled 3-D point; tokens are binned into voxels of ``voxel_size`` metres
(``floor((x - x_min) / s)``). Per voxel and view the tokens are averaged and L2-normalised into a
prototype; the score is the cosine between prototypes of the same voxel from different views,
averaged over all such pairs (``multiview``, pair-weighted), or the released code's adjacent-frame
variant (``adjacent``).

The features are read once, in order (compiled loops in ``voxel_kernels``): voxels get dense ids from a
lookup table (no sort); each token is normed and added into its voxel's sum of prototypes ``P_k`` while its
row is in cache, and the sum of all pairwise dot products inside a voxel is
``(|P_k|^2 - sum_g |p_g|^2) / 2``, taken at the voxel's last token, so no pair is formed. Memory is linear
in the number of tokens (integer indices, and one row per voxel in view); other float types and devices are
upcast a chunk of views at a time.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from vega3d.analysis import voxel_kernels

PROTOCOLS = ("multiview", "adjacent")
_CHUNK_ELEMENTS = 1 << 24  # feature elements per upcast chunk (64 MiB in fp32)
_TABLE_ENTRIES = 1 << 22  # a voxel lookup table may always take this many int32 entries (16 MiB),
_TABLE_ENTRIES_PER_TOKEN = 4  # or this many per token
_STREAM_ROW_BYTES = (1024, 3072)  # rows this long are requested ahead of the read (measured, see _voxels)
_PARALLEL_ELEMENTS = 1 << 25  # feature elements (128 MiB in fp32) from which parts are read on several threads
_MAX_PARTS = 8


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
    features, coords, valid = _validate(features, coords, valid)
    if protocol == "multiview":
        return _multiview(features, coords, valid, float(voxel_size), token_scores)
    return _adjacent(features, coords, valid, float(voxel_size))


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
    """Check shapes and coordinates; return features (as given, any device and float type), and on the CPU
    coords [T, 3] float64 and valid [T] bool as numpy arrays."""
    features = _as_tensor(features, "features").detach()
    if features.ndim != 3:
        raise ValueError(f"features must be [V, N, C]; got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        features = features.float()
    v, n, c = features.shape
    if v == 0 or n == 0 or c == 0:
        raise ValueError(f"features is empty: shape {tuple(features.shape)}")
    coords = _as_tensor(coords, "coords").detach().to("cpu", torch.float64)
    if tuple(coords.shape) != (v, n, 3):
        raise ValueError(f"coords must be [V, N, 3] = {[v, n, 3]} to match features; got {list(coords.shape)}")
    coords = coords.reshape(-1, 3).contiguous().numpy()
    if valid is None:
        valid = np.ones(v * n, bool)
    else:
        valid = _as_tensor(valid, "valid").detach().cpu()
        if tuple(valid.shape) != (v, n):
            raise ValueError(f"valid must be [V, N] = {[v, n]}; got {list(valid.shape)}")
        if valid.dtype != torch.bool:
            raise TypeError(f"valid must be boolean; got {valid.dtype}")
        valid = valid.reshape(-1).contiguous().numpy()
        if not valid.any():
            raise ValueError("no valid token: the scene is empty or every token is masked out")
    # The sum of finite coordinates (metres) is finite: one reduction, and the per-token search only on failure.
    if not (valid.all() and np.isfinite(coords.sum())):
        bad = ~np.isfinite(coords).all(-1) & valid
        if bad.any():
            raise ValueError(f"coords contain {_first_bad(torch.from_numpy(bad).reshape(v, n))}")
    return features, coords, valid


def _check_finite(features, valid: np.ndarray, norm_sum: float) -> None:
    """A non-finite feature makes its token's norm non-finite, and the sum of the norms (all >= 0, so a NaN
    or inf among them survives it): the norms the score takes anyway are the check, and the exact
    per-value search runs only on failure."""
    if math.isfinite(norm_sum):
        return
    bad = ~torch.isfinite(features).all(-1).cpu() & torch.from_numpy(valid).reshape(features.shape[:2])
    if bad.any():
        raise ValueError(f"features contain {_first_bad(bad)}")
    raise ValueError("features are too large: their norms overflow float32")


def _in_place(features) -> bool:
    """Whether the features can be read where they are (contiguous float32 on the CPU), as one array."""
    return features.dtype == torch.float32 and features.device.type == "cpu" and features.is_contiguous()


def _view_chunks(features, first_view: int, last_view: int):
    """(first token, float32 CPU rows [R, C]) over views ``first_view .. last_view - 1``: one zero-copy
    chunk for features read in place, otherwise whole views a chunk at a time (upcast, moved)."""
    v, n, c = features.shape
    step = last_view - first_view if _in_place(features) else max(1, _CHUNK_ELEMENTS // (n * c))
    for a in range(first_view, last_view, step):
        b = min(last_view, a + step)
        yield a * n, features[a:b].reshape(-1, c).to("cpu", torch.float32).contiguous().numpy()


def _voxel_ids(coords: np.ndarray, valid: np.ndarray, voxel_size: float) -> tuple[np.ndarray, int]:
    """Dense voxel id per token (-1 where invalid), ``x_min`` the element-wise minimum of the valid tokens
    (App. C.1). A lookup table over the voxel grid when it is not much larger than the token count;
    otherwise (sparse points, huge extents) ``unique`` over the floored coordinates, which are exact
    integers in float64."""
    ids = np.empty(len(coords), np.int32)  # numpy's large arrays get huge pages, where the system allows
    count = voxel_kernels.table_voxel_ids(coords, valid, voxel_size, max(_TABLE_ENTRIES, _TABLE_ENTRIES_PER_TOKEN * len(coords)), ids)
    if count >= 0:
        return ids, count
    cells = np.floor((coords[valid] - coords[valid].min(0)) / voxel_size)
    _, inverse = np.unique(cells, axis=0, return_inverse=True)
    ids[valid] = inverse.reshape(-1)
    return ids, int(inverse.max()) + 1


@dataclass
class _Voxels:
    """Tokens of some views grouped by (voxel, view); per voxel seen by >= 2 views (``slot`` >= 0) the sum
    of its groups' pairwise cosines ``pair_sums`` and, when kept, the sum ``total`` of its prototypes."""

    ids: np.ndarray  # [T] voxel of each token, -1 if invalid
    group: np.ndarray  # [T] (voxel, view) group of each token
    group_voxel: np.ndarray  # [G]
    group_norm: np.ndarray  # [G] |s_g|
    views: np.ndarray  # [K] views seeing each voxel
    slot: np.ndarray  # [K]
    total: np.ndarray | None  # [S, C] float32 in slot order, when kept
    norm_sum: float  # of the valid tokens' norms
    pair_sums: np.ndarray  # [S] float64
    num_pairs: int  # cross-view prototype pairs


def _voxels(features, coords, valid, first_view: int, last_view: int, voxel_size: float, normalise: bool,
            keep_totals: bool = False) -> _Voxels:
    """Bin views ``first_view .. last_view - 1`` into voxels and read their features once (``normalise``:
    each token L2-normalised before its group is averaged, as the released adjacent script does).
    ``P_k`` rows are pooled: a voxel holds one from its first token to its last, so the rows in use are
    those of the voxels in view (a few hundred on a camera path) and stay in cache. ``keep_totals`` keeps
    every ``P_k`` instead (the token map). Rows of 1-3 KiB (``_STREAM_ROW_BYTES``) are requested
    ``STREAM_AHEAD_BYTES`` ahead of the read: out of memory that saves 10-30 % of the pass (256-768
    channels); for rows of 4 KiB and more the hardware keeps up alone, and for rows of 512 bytes or less
    the per-row request costs more than it saves.

    Large inputs are read in parts of whole views, one thread each (:func:`_num_parts`): a voxel seen in
    several parts keeps its row of ``P_k`` in each, and its pair sum is taken after them from their sum,
    ``(|sum_p P_p|^2 - sum_p sum_g |p_g|^2) / 2``: the same score up to float rounding.
    """
    n, c = features.shape[1], features.shape[2]
    rows = slice(first_view * n, last_view * n)
    ids, count = _voxel_ids(coords[rows], valid[rows], voxel_size)
    # allocated by numpy, which asks for huge pages for large arrays: fewer page faults on first touch
    group, size, group_voxel = (np.empty(len(ids), np.int32) for _ in range(3))
    views, first, last, slot, num_groups, shared, in_view, num_pairs = voxel_kernels.group_tokens(
        ids, n, count, group, size, group_voxel)
    size, group_voxel = size[:num_groups], group_voxel[:num_groups]
    parts = _num_parts(last_view - first_view, n * c, keep_totals)
    cuts = np.linspace(first_view, last_view, parts + 1).astype(int)
    across_parts = np.zeros(shared, bool)  # voxels seen in several parts: first and last tokens in different ones
    kept = 0  # the most such voxels one part may see (their rows are kept until all parts are read)
    if parts > 1:
        part = np.searchsorted(cuts[1:-1], first_view + np.stack([first, last]) // n, side="right")
        spanning = (slot >= 0) & (part[0] != part[1])
        across_parts[slot[spanning]] = True
        kept = int(np.max(np.add.accumulate(np.bincount(part[0][spanning], minlength=parts)
                                            - np.bincount(part[1][spanning] + 1, minlength=parts + 1)[:parts])))
    # per part: pooled rows, the voxels in view plus those kept (a row is written before it is added to), the
    # row of each voxel, ``sum_g |p_g|^2`` and the pair sums of the voxels inside the part
    pooled = shared if keep_totals else in_view + kept
    totals, row_of = np.empty((parts, pooled, c), np.float32), np.full((parts, shared), -1, np.int64)
    sq, pair = np.zeros((parts, shared)), np.zeros((parts, shared))
    group_norm = np.zeros(len(size), np.float32)
    ahead = max(1, voxel_kernels.STREAM_AHEAD_BYTES // (4 * c)) if _STREAM_ROW_BYTES[0] <= 4 * c <= _STREAM_ROW_BYTES[1] else 0

    def read_part(p: int) -> float:
        sums = (totals[p], row_of[p], np.arange(pooled), np.array([pooled]), sq[p], pair[p])
        norm_sum = 0.0
        for first_token, chunk in _view_chunks(features, cuts[p], cuts[p + 1]):
            norm_sum += voxel_kernels.accumulate(chunk, first_token - first_view * n, n, ids, last, group, size, slot,
                                                 normalise, keep_totals, ahead, sums, group_norm, across_parts)
        return norm_sum

    later = [_pool().submit(read_part, p) for p in range(1, parts)]
    norm_sum = read_part(0) + sum(job.result() for job in later)
    pair_sums = pair[0]
    if parts > 1:
        pair_sums = pair.sum(0)
        voxel_kernels.pairs_across_parts(totals, row_of, sq, np.flatnonzero(across_parts), pair_sums)
    return _Voxels(ids, group, group_voxel, group_norm, views, slot, totals[0] if keep_totals else None, norm_sum,
                   pair_sums, int(num_pairs))


def _num_parts(num_views: int, view_elements: int, keep_totals: bool) -> int:
    """Threads to read the views' features on: one per torch thread, from ``_PARALLEL_ELEMENTS`` elements on
    (reading memory scales with threads, in-cache work did not here: at the paper's size, 38 MB, 2.4 ms on
    one thread and 2.5-2.8 ms on two), at most ``_MAX_PARTS`` (each part keeps a row for every voxel it
    shares with another), never more than the views, and one for the token map (every ``P_k`` kept)."""
    if keep_totals or num_views * view_elements < _PARALLEL_ELEMENTS:
        return 1
    return max(1, min(_score_threads(), num_views, _MAX_PARTS))


def _score_threads() -> int:
    return torch.get_num_threads()


def _pool() -> ThreadPoolExecutor:
    """The threads that read the later parts (started as needed), kept for the next score."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(_MAX_PARTS - 1, thread_name_prefix="vega3d-score")
    return _POOL


_POOL: ThreadPoolExecutor | None = None


def _mean_cosine_to_other_views(features, cells: _Voxels) -> torch.Tensor:
    """Per token [V, N]: its group's mean cosine to the other views' prototypes in its voxel (NaN if none),
    with ``p_g = s_g / |s_g|``: ``(s_g . P_k / |s_g| - |p_g|^2) / (views - 1)``."""
    dots = np.zeros(len(cells.group_norm))
    for first, chunk in _view_chunks(features, 0, features.shape[0]):
        voxel_kernels.group_dots(chunk, first, cells.ids, cells.group, cells.slot, cells.total, dots)
    norm = cells.group_norm.astype(np.float64)
    safe = np.maximum(norm, voxel_kernels.EPS)
    views = cells.views[cells.group_voxel]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (dots / safe - (norm / safe) ** 2) / (views - 1)
    mean[views < 2] = np.nan
    out = np.full(len(cells.ids), np.nan)
    seen = cells.ids >= 0
    out[seen] = mean[cells.group[seen]]
    return torch.from_numpy(out).reshape(features.shape[:2]).float()


def _multiview(features, coords, valid, voxel_size, want_token_scores) -> CorrespondenceResult:
    cells = _voxels(features, coords, valid, 0, features.shape[0], voxel_size, normalise=False,
                    keep_totals=want_token_scores)
    _check_finite(features, valid, cells.norm_sum)
    num_pairs = cells.num_pairs
    if num_pairs == 0:  # no voxel seen by two views
        nan_map = torch.full(features.shape[:2], float("nan")) if want_token_scores else None
        return CorrespondenceResult(float("nan"), 0, 0, "multiview", voxel_size, token_scores=nan_map)
    score = float(cells.pair_sums.sum() / num_pairs)
    per_token = _mean_cosine_to_other_views(features, cells) if want_token_scores else None
    return CorrespondenceResult(score, num_pairs, len(cells.pair_sums), "multiview", voxel_size, token_scores=per_token)


def _adjacent(features, coords, valid, voxel_size) -> CorrespondenceResult:
    """Released variant: frames (t, t+1), tokens L2-normalised first, x_min over the pair's valid tokens,
    unweighted mean over shared voxels per pair, scene score = mean over pairs with a score."""
    v = features.shape[0]
    norm_sum, scores, total_cells = 0.0, [], 0
    for t in range(v - 1):  # each pair is its own two-view scene: its voxels' pair sums are their cosines
        cells = _voxels(features, coords, valid, t, t + 2, voxel_size, normalise=True)
        norm_sum += cells.norm_sum
        total_cells += len(cells.pair_sums)
        scores.append(float(cells.pair_sums.mean()) if len(cells.pair_sums) else float("nan"))
    if v < 2:
        norms = torch.linalg.vector_norm(features.float(), dim=-1).reshape(-1).cpu()
        norm_sum = float(norms[torch.from_numpy(valid)].sum(dtype=torch.float64))
    _check_finite(features, valid, norm_sum)
    scored = [x for x in scores if not math.isnan(x)]
    score = float(np.mean(scored)) if scored else float("nan")
    return CorrespondenceResult(score, total_cells, total_cells, "adjacent", voxel_size, pair_scores=scores)
