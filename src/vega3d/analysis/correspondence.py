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
    features = _as_tensor(features, "features")
    coords = _as_tensor(coords, "coords").to(features.device)
    if features.ndim != 3:
        raise ValueError(f"features must be [V, N, C]; got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        features = features.float()
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
    # One reduction instead of a full-size mask; the exact check runs only if the sums are not finite.
    if not torch.isfinite(features.sum(-1)[valid]).all():
        bad = ~torch.isfinite(features).all(-1) & valid
        if bad.any():
            raise ValueError(f"features contain {_first_bad(bad)}")
    return features, coords, valid


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


def _group_prototypes(feats, voxel, view, num_views):
    """Per (voxel, view) group of valid tokens (voxel >= 0): L2-normalised mean feature.

    Returns prototypes [G, C], each group's voxel [G], and each token's group (G for invalid tokens).
    Normalising the sum equals normalising the mean, so the count is never divided out.
    """
    keep = voxel >= 0
    unique, inverse = torch.unique(voxel[keep] * num_views + view[keep], return_inverse=True)
    index = torch.full_like(voxel, len(unique))
    index[keep] = inverse
    sums = torch.zeros(len(unique) + 1, feats.shape[-1], dtype=torch.float32, device=feats.device)
    sums.index_add_(0, index, feats.to(torch.float32))
    return F.normalize(sums[:-1], dim=-1), unique // num_views, index


class _VoxelSums:
    """Per voxel: sum of prototypes, sum of their squared norms, number of views seeing it."""

    def __init__(self, num_voxels: int, channels: int, device):
        self.total = torch.zeros(num_voxels, channels, dtype=torch.float32, device=device)
        self.squares = torch.zeros(num_voxels, dtype=torch.float64, device=device)
        self.views = torch.zeros(num_voxels, dtype=torch.int64, device=device)

    def add(self, prototypes: torch.Tensor, group_voxel: torch.Tensor) -> "_VoxelSums":
        self.total.index_add_(0, group_voxel, prototypes)
        self.squares.index_add_(0, group_voxel, prototypes.square().sum(-1, dtype=torch.float64))
        self.views.index_add_(0, group_voxel, torch.ones_like(group_voxel))
        return self

    def pair_sums(self) -> torch.Tensor:
        """Sum over view pairs t < t' of p_t . p_t', per voxel (|sum p|^2 - sum |p|^2) / 2."""
        return (self.total.square().sum(-1, dtype=torch.float64) - self.squares) / 2


def _chunk(num_views: int, tokens_per_view: int, channels: int) -> int:
    return max(1, min(num_views, _CHUNK_ELEMENTS // max(1, tokens_per_view * channels)))


def _multiview(features, coords, valid, voxel_size, want_token_scores) -> CorrespondenceResult:
    v, n, c = features.shape
    x_min = coords[valid].min(0).values  # App. C.1: element-wise minimum over the scene's tokens
    voxel = torch.full((v, n), -1, dtype=torch.int64, device=features.device)
    voxel[valid], _ = _compact(_voxel_index(coords[valid], x_min, voxel_size))
    num_voxels = int(voxel.max()) + 1
    step = _chunk(v, n, c)

    def chunks():
        for a in range(0, v, step):
            b = min(v, a + step)
            view = torch.arange(b - a, device=features.device).repeat_interleave(n)
            yield a, b, _group_prototypes(features[a:b].reshape(-1, c), voxel[a:b].reshape(-1), view, b - a)

    sums = _VoxelSums(num_voxels, c, features.device)
    for _, _, (prototypes, group_voxel, _) in chunks():
        sums.add(prototypes, group_voxel)
    views = sums.views
    shared = views >= 2
    pair_sum = sums.pair_sums()
    num_pairs = int((views * (views - 1) // 2)[shared].sum())
    score = float(pair_sum[shared].sum() / num_pairs) if num_pairs else float("nan")

    per_token = None
    if want_token_scores:
        per_token = torch.full((v * n,), float("nan"), dtype=torch.float64, device=features.device)
        for a, b, (prototypes, group_voxel, index) in chunks():
            others = views[group_voxel] - 1
            dots = (prototypes * sums.total[group_voxel]).sum(-1, dtype=torch.float64)
            mean_cos = (dots - prototypes.square().sum(-1, dtype=torch.float64)) / others.clamp_min(1)
            mean_cos = torch.where(others > 0, mean_cos, torch.full_like(mean_cos, float("nan")))
            padded = torch.cat([mean_cos, mean_cos.new_full((1,), float("nan"))])
            per_token[a * n : b * n] = padded[index]
        per_token = per_token.reshape(v, n).float()
    return CorrespondenceResult(score, num_pairs, int(shared.sum()), "multiview", voxel_size, token_scores=per_token)


def _adjacent(features, coords, valid, voxel_size) -> CorrespondenceResult:
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
        pair_id = torch.arange(pairs, device=features.device)[:, None, None].expand(pairs, 2, n)
        voxel = torch.full((pairs, 2, n), -1, dtype=torch.int64, device=features.device)
        if not keep.any():
            continue
        columns = torch.cat([pair_id[keep][:, None], grid[keep]], 1)
        voxel[keep], voxel_pair = _compact(columns)
        feats = F.normalize(torch.stack([features[a:b], features[a + 1 : b + 1]], 1).to(torch.float32), dim=-1)
        side = torch.tensor([0, 1], device=features.device)[None, :, None].expand(pairs, 2, n)
        prototypes, group_voxel, _ = _group_prototypes(feats.reshape(-1, c), voxel.reshape(-1), side.reshape(-1), 2)
        sums = _VoxelSums(int(voxel.max()) + 1, c, features.device).add(prototypes, group_voxel)
        shared = sums.views == 2
        cosine = sums.pair_sums()
        pair_sum.index_add_(0, voxel_pair[shared] + a, cosine[shared])
        pair_count.index_add_(0, voxel_pair[shared] + a, torch.ones_like(voxel_pair[shared]))
    scores = torch.where(pair_count > 0, pair_sum / pair_count.clamp_min(1), torch.full_like(pair_sum, float("nan")))
    scored = pair_count > 0
    score = float(scores[scored].mean()) if scored.any() else float("nan")
    total_pairs = int(pair_count.sum())
    return CorrespondenceResult(score, total_pairs, total_pairs, "adjacent", voxel_size, pair_scores=scores.tolist())
