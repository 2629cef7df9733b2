"""Multi-view correspondence score (paper Sec. 4.1, App. C.1).

Each token carries a pooled 3-D point; tokens are binned into voxels of ``voxel_size`` metres
(``floor((x - x_min) / s)``). Per voxel and view the tokens are averaged and L2-normalised into a
prototype; the score is the cosine between prototypes of the same voxel from different views,
averaged over all such pairs (``multiview``, pair-weighted), or the released code's adjacent-frame
variant (``adjacent``).

Everything is vectorised: prototypes come from ``index_add_`` over (voxel, view) groups, and the sum of
all pairwise dot products inside a voxel is ``(|sum_t p_t|^2 - sum_t |p_t|^2) / 2``, so no loop runs
over voxels or tokens. Views are processed in chunks to bound memory (linear in the number of tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

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
    bad = ~torch.isfinite(coords).all(-1) & valid
    if bad.any():
        raise ValueError(f"coords contain {_first_bad(bad)}")
    # Token norms are needed anyway; a non-finite feature makes its norm non-finite, so this one
    # reduction is also the finiteness check (the exact per-value search runs only on failure).
    norms = torch.linalg.vector_norm(features, dim=-1, dtype=torch.float32)
    if not torch.isfinite(norms[valid]).all():
        bad = ~torch.isfinite(features).all(-1) & valid
        if bad.any():
            raise ValueError(f"features contain {_first_bad(bad)}")
        raise ValueError("features are too large: their norms overflow float32")
    return features, coords, valid, norms


def _compact(columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense ids 0..K-1 for the distinct rows of non-negative int64 ``columns`` [M, k]; also each id's first column."""
    dims = columns.max(0).values + 1
    if float(torch.prod(dims.double())) < 2.0**62:
        strides = torch.ones_like(dims)
        for i in range(len(dims) - 2, -1, -1):
            strides[i] = strides[i + 1] * dims[i + 1]
        unique, inverse = torch.unique((columns * strides).sum(-1), return_inverse=True)
        return inverse, unique // strides[0]
    unique, inverse = torch.unique(columns, dim=0, return_inverse=True)  # huge extents: slower, exact
    return inverse, unique[:, 0]


def _voxel_index(coords: torch.Tensor, x_min: torch.Tensor, voxel_size: float) -> torch.Tensor:
    return torch.floor((coords - x_min) / voxel_size).to(torch.int64)


_EPS = 1e-12  # as torch.nn.functional.normalize: a zero sum gives a zero prototype


@dataclass
class _Groups:
    """The (voxel, view) groups of one chunk of tokens, folded into one weight per token.

    A prototype is ``p_g = s_g / |s_g|`` with ``s_g = sum_{t in g} a_t f_t`` (``a_t = 1``, or ``1 / |f_t|``
    when tokens are normalised first), so ``p_g = sum_{t in g} w_t f_t`` with ``w_t = a_t / |s_g|``:
    every token can be added straight into its voxel's sum of prototypes. Only groups of several
    tokens need their sum ``s_g`` (for its norm); a one-token group's norm is ``a_t |f_t|``.
    """

    token_voxel: torch.Tensor  # [R] voxel of each token; ``num_voxels`` (a spare row) for invalid tokens
    weight: torch.Tensor  # [R] w_t, 0 for invalid tokens
    token_group: torch.Tensor  # [R] group of each token; G for invalid tokens
    group_voxel: torch.Tensor  # [G]
    prototype_sq: torch.Tensor  # [G] |p_g|^2: 1, or 0 for a zero sum


def _keep_shared(voxel: torch.Tensor, view: torch.Tensor, num_views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Renumber the voxels seen by >= 2 views as 0..K-1 and set every other token to -1.

    Only those voxels can form a pair, and finding them needs integer ids alone, so features of the
    others are never aggregated. Returns the new voxel of each token and the old ids' "shared" mask.
    """
    keep = voxel >= 0
    groups = torch.unique(voxel[keep] * num_views + view[keep])
    views = torch.bincount(groups // num_views, minlength=int(voxel.max()) + 1 if keep.any() else 0)
    shared = views >= 2
    renumber = torch.full_like(views, -1)
    renumber[shared] = torch.arange(int(shared.sum()), device=voxel.device)
    out = torch.full_like(voxel, -1)
    out[keep] = renumber[voxel[keep]]
    return out, shared


def _weighted_row_sums(num_rows: int, row: torch.Tensor, col: torch.Tensor, weight: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``out[r] = sum of weight * dense[col]`` over the entries with ``row == r``.

    A sparse-dense matmul: 2-4x faster on CPU than ``index_add_`` over rows, and the weights come free.
    """
    matrix = torch.sparse_coo_tensor(torch.stack([row, col]), weight, size=(num_rows, dense.shape[0]),
                                     check_invariants=False)  # indices are in range by construction
    return torch.sparse.mm(matrix, dense)


def _groups(feats, norms, voxel, view, num_views, num_voxels, normalise_tokens) -> _Groups:
    keep = voxel >= 0
    kept = keep.nonzero().squeeze(1)
    unique, inverse, counts = torch.unique(voxel[kept] * num_views + view[kept], return_inverse=True, return_counts=True)
    a = 1.0 / norms[kept].clamp_min(_EPS) if normalise_tokens else torch.ones_like(norms[kept])
    group_norm = norms.new_empty(len(unique))
    single = counts[inverse] == 1
    group_norm[inverse[single]] = (a * norms[kept])[single]
    if not bool(single.all()):
        ids, local = torch.unique(inverse[~single], return_inverse=True)
        sums = _weighted_row_sums(len(ids), local, kept[~single], a[~single], feats)
        group_norm[ids] = torch.linalg.vector_norm(sums, dim=-1)
    weight = torch.zeros_like(norms)
    weight[kept] = a / group_norm[inverse].clamp_min(_EPS)
    token_voxel = torch.full_like(voxel, num_voxels)
    token_voxel[kept] = voxel[kept]
    token_group = torch.full_like(voxel, len(unique))
    token_group[kept] = inverse
    prototype_sq = (group_norm / group_norm.clamp_min(_EPS)).square().to(torch.float64)
    return _Groups(token_voxel, weight, token_group, unique // num_views, prototype_sq)


class _VoxelSums:
    """Per voxel: sum of prototypes, sum of their squared norms, number of views seeing it."""

    def __init__(self, num_voxels: int, device):
        self.num_rows = num_voxels + 1  # a spare last row collects invalid tokens (weight 0)
        self.total: torch.Tensor | None = None
        self.squares = torch.zeros(num_voxels, dtype=torch.float64, device=device)
        self.views = torch.zeros(num_voxels, dtype=torch.int64, device=device)

    def add(self, feats: torch.Tensor, groups: _Groups) -> "_VoxelSums":
        tokens = (groups.weight != 0).nonzero().squeeze(1)  # tokens of unshared voxels carry no pair
        part = _weighted_row_sums(self.num_rows, groups.token_voxel[tokens], tokens, groups.weight[tokens], feats)
        self.total = part if self.total is None else self.total.add_(part)
        self.squares.index_add_(0, groups.group_voxel, groups.prototype_sq)
        self.views.index_add_(0, groups.group_voxel, torch.ones_like(groups.group_voxel))
        return self

    def pair_sums(self) -> torch.Tensor:
        """Sum over view pairs t < t' of p_t . p_t', per voxel (|sum p|^2 - sum |p|^2) / 2."""
        # a norm, not einsum("kc,kc->k"): that runs as K batched 1xC by Cx1 matmuls
        total_sq = torch.linalg.vector_norm(self.total[:-1], dim=-1).to(torch.float64).square()
        return (total_sq - self.squares) / 2

    def mean_cosine_to_other_views(self, feats: torch.Tensor, groups: _Groups) -> torch.Tensor:
        """Per token: its group's mean cosine to the other views' prototypes in its voxel (NaN if none)."""
        dots = (feats * self.total[groups.token_voxel]).sum(-1) * groups.weight
        num_groups = len(groups.group_voxel)
        group_dot = torch.zeros(num_groups + 1, dtype=torch.float64, device=dots.device).index_add_(0, groups.token_group, dots.to(torch.float64))
        others = self.views[groups.group_voxel] - 1
        mean = (group_dot[:-1] - groups.prototype_sq) / others.clamp_min(1)
        mean = torch.where(others > 0, mean, torch.full_like(mean, float("nan")))
        return torch.cat([mean, mean.new_full((1,), float("nan"))])[groups.token_group]


def _chunk(num_views: int, tokens_per_view: int, channels: int) -> int:
    return max(1, min(num_views, _CHUNK_ELEMENTS // max(1, tokens_per_view * channels)))


def _multiview(features, norms, coords, valid, voxel_size, want_token_scores) -> CorrespondenceResult:
    v, n, c = features.shape
    x_min = coords[valid].min(0).values  # App. C.1: element-wise minimum over the scene's tokens
    voxel = torch.full((v, n), -1, dtype=torch.int64, device=features.device)
    voxel[valid], _ = _compact(_voxel_index(coords[valid], x_min, voxel_size))
    view_of_token = torch.arange(v, device=features.device).repeat_interleave(n)
    voxel, _ = _keep_shared(voxel.reshape(-1), view_of_token, v)
    voxel = voxel.reshape(v, n)
    num_voxels = int(voxel.max()) + 1
    if num_voxels == 0:  # no voxel seen by two views
        nan_map = torch.full((v, n), float("nan")) if want_token_scores else None
        return CorrespondenceResult(float("nan"), 0, 0, "multiview", voxel_size, token_scores=nan_map)
    step = _chunk(v, n, c)

    def chunks():
        for a in range(0, v, step):
            b = min(v, a + step)
            view = torch.arange(b - a, device=features.device).repeat_interleave(n)
            feats = features[a:b].reshape(-1, c).to(torch.float32)
            yield a, b, feats, _groups(feats, norms[a:b].reshape(-1), voxel[a:b].reshape(-1), view, b - a, num_voxels, False)

    sums = _VoxelSums(num_voxels, features.device)
    for _, _, feats, groups in chunks():
        sums.add(feats, groups)
    views = sums.views
    shared = views >= 2
    pair_sum = sums.pair_sums()
    num_pairs = int((views * (views - 1) // 2)[shared].sum())
    score = float(pair_sum[shared].sum() / num_pairs) if num_pairs else float("nan")

    per_token = None
    if want_token_scores:
        per_token = torch.empty(v * n, dtype=torch.float64, device=features.device)
        for a, b, feats, groups in chunks():
            per_token[a * n : b * n] = sums.mean_cosine_to_other_views(feats, groups)
        per_token = per_token.reshape(v, n).float()
    return CorrespondenceResult(score, num_pairs, int(shared.sum()), "multiview", voxel_size, token_scores=per_token)


def _adjacent(features, norms, coords, valid, voxel_size) -> CorrespondenceResult:
    """Released variant: frames (t, t+1), tokens L2-normalised first, x_min over the pair's valid tokens,
    unweighted mean over shared voxels per pair, scene score = mean over pairs with a score."""
    v, n, c = features.shape
    if v < 2:
        return CorrespondenceResult(float("nan"), 0, 0, "adjacent", voxel_size, pair_scores=[])
    inf = torch.full_like(coords, float("inf"))
    view_min = torch.where(valid[..., None], coords, inf).min(1).values  # [V, 3], inf for empty views
    pair_sum = torch.zeros(v - 1, dtype=torch.float64, device=features.device)
    pair_count = torch.zeros(v - 1, dtype=torch.int64, device=features.device)
    step = max(1, _chunk(v, n, c) // 2)
    for a in range(0, v - 1, step):
        b = min(v - 1, a + step)
        pairs = b - a
        x_min = torch.minimum(view_min[a:b], view_min[a + 1 : b + 1])  # [P, 3]
        both = torch.stack([coords[a:b], coords[a + 1 : b + 1]], 1)  # [P, 2, N, 3]
        keep = torch.stack([valid[a:b], valid[a + 1 : b + 1]], 1)
        grid = _voxel_index(both, x_min[:, None, None], voxel_size)
        if not keep.any():
            continue
        pair_id = torch.arange(pairs, device=features.device)[:, None, None].expand(pairs, 2, n)
        voxel = torch.full((pairs, 2, n), -1, dtype=torch.int64, device=features.device)
        columns = torch.cat([pair_id[keep][:, None], grid[keep]], 1)
        voxel[keep], voxel_pair = _compact(columns)
        side = torch.tensor([0, 1], device=features.device)[None, :, None].expand(pairs, 2, n).reshape(-1)
        flat_voxel, shared_cells = _keep_shared(voxel.reshape(-1), side, 2)
        if not shared_cells.any():
            continue
        voxel_pair = voxel_pair[shared_cells]
        feats = torch.stack([features[a:b], features[a + 1 : b + 1]], 1).reshape(-1, c).to(torch.float32)
        pair_norms = torch.stack([norms[a:b], norms[a + 1 : b + 1]], 1).reshape(-1)
        num_voxels = int(shared_cells.sum())
        groups = _groups(feats, pair_norms, flat_voxel, side, 2, num_voxels, normalise_tokens=True)
        cosine = _VoxelSums(num_voxels, features.device).add(feats, groups).pair_sums()  # one pair per cell
        pair_sum.index_add_(0, voxel_pair + a, cosine)
        pair_count.index_add_(0, voxel_pair + a, torch.ones_like(voxel_pair))
    scores = torch.where(pair_count > 0, pair_sum / pair_count.clamp_min(1), torch.full_like(pair_sum, float("nan")))
    scored = pair_count > 0
    score = float(scores[scored].mean()) if scored.any() else float("nan")
    total_pairs = int(pair_count.sum())
    return CorrespondenceResult(score, total_pairs, total_pairs, "adjacent", voxel_size, pair_scores=scores.tolist())
