import itertools
import math
import threading

import numpy as np
import pytest
import torch

from vega3d.analysis import correspondence_score


def reference_multiview(f, x, valid, s):
    """App. C.1 written out token by token with dictionaries (independent of the compiled code); also
    each token's mean cosine to the other views' prototypes of its voxel."""
    tokens = [(t, n) for t in range(f.shape[0]) for n in range(f.shape[1]) if valid[t, n]]
    x_min = np.min([x[t, n] for t, n in tokens], axis=0)
    voxels, where = {}, {}
    for t, n in tokens:
        key = tuple(int(v) for v in np.floor((x[t, n] - x_min) / s))
        voxels.setdefault(key, {}).setdefault(t, []).append(f[t, n])
        where[t, n] = key
    total, pairs = 0.0, 0
    protos = {key: {t: np.mean(v, 0) / np.linalg.norm(np.mean(v, 0)) for t, v in views.items()} for key, views in voxels.items()}
    for voxel in protos.values():
        for a, b in itertools.combinations(sorted(voxel), 2):
            total += float(voxel[a] @ voxel[b])
            pairs += 1
    token_map = np.full(f.shape[:2], np.nan)
    for (t, n), key in where.items():
        others = [p for u, p in protos[key].items() if u != t]
        if others:
            token_map[t, n] = np.mean([protos[key][t] @ p for p in others])
    return (total / pairs if pairs else math.nan), pairs, token_map


def reference_adjacent(f, x, valid, s):
    scores = []
    for t in range(f.shape[0] - 1):
        tokens = [(u, n) for u in (t, t + 1) for n in range(f.shape[1]) if valid[u, n]]
        x_min = np.min([x[u, n] for u, n in tokens], axis=0)
        voxels = {}
        for u, n in tokens:
            key = tuple(int(v) for v in np.floor((x[u, n] - x_min) / s))
            voxels.setdefault(key, {}).setdefault(u, []).append(f[u, n] / np.linalg.norm(f[u, n]))
        cos = []
        for views in voxels.values():
            if len(views) == 2:
                p, q = (np.mean(views[u], 0) for u in (t, t + 1))
                cos.append(float(p @ q / np.linalg.norm(p) / np.linalg.norm(q)))
        scores.append(np.mean(cos) if cos else math.nan)
    return scores


# The three ways features are read must all match the reference: float32 read in place, with rows
# requested ahead of the read (1-3 KiB rows) or not, and other types upcast a chunk of views at a time.
PATHS = {"in place, requested ahead": (np.float32, (0, 1 << 40)), "in place": (np.float32, (1, 0)),
         "upcast chunks": (np.float64, (1, 0))}


@pytest.fixture(params=list(PATHS))
def dtype(request, monkeypatch):
    import vega3d.analysis.correspondence as module

    dtype, stream_bytes = PATHS[request.param]
    monkeypatch.setattr(module, "_STREAM_ROW_BYTES", stream_bytes)
    monkeypatch.setattr(module.voxel_kernels, "STREAM_AHEAD_BYTES", 16)  # a few rows ahead of these tiny ones
    return dtype


@pytest.mark.parametrize("seed", range(4))
def test_multiview_matches_token_by_token_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    v, n, c = rng.integers(2, 6), rng.integers(8, 40), rng.integers(1, 9)
    f = rng.normal(size=(v, n, c)).astype(dtype)
    x = rng.uniform(-0.3, 0.2, size=(v, n, 3))
    valid = rng.random((v, n)) > 0.25
    result = correspondence_score(f, x, torch.from_numpy(valid), token_scores=True)
    expected, pairs, token_map = reference_multiview(f.astype(np.float64), x, valid, 0.1)
    assert result.score == pytest.approx(expected, abs=1e-6)
    assert result.num_pairs == pairs
    np.testing.assert_allclose(result.token_scores.numpy(), token_map, atol=1e-5)
    assert correspondence_score(f, x, torch.from_numpy(valid)).score == pytest.approx(result.score, abs=1e-7)


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_views_read_in_parts_on_threads_match_the_reference(parts, dtype, monkeypatch):
    # Large inputs are read in parts of whole views, one thread each: here every input is large and there
    # are 2-5 parts, so voxels span two or more parts (some are seen in a middle part too, some skip one).
    import vega3d.analysis.correspondence as module

    monkeypatch.setattr(module, "_PARALLEL_ELEMENTS", 0)
    monkeypatch.setattr(module, "_score_threads", lambda: parts)
    calls = []
    accumulate = module.voxel_kernels.accumulate
    monkeypatch.setattr(module.voxel_kernels, "accumulate",
                        lambda *args: calls.append(threading.get_ident()) or accumulate(*args))
    rng = np.random.default_rng(parts)
    v, n, c = 11, 30, 6
    f = rng.normal(size=(v, n, c)).astype(dtype)
    x = rng.uniform(-0.25, 0.25, size=(v, n, 3))  # few voxels: most are seen in many views
    valid = rng.random((v, n)) > 0.2
    expected, pairs, _ = reference_multiview(f.astype(np.float64), x, valid, 0.1)
    result = correspondence_score(f, x, torch.from_numpy(valid))
    assert len(calls) == parts and threading.get_ident() in calls and len(set(calls)) > 1  # part 0 here, the rest on the pool
    assert result.score == pytest.approx(expected, abs=1e-6) and result.num_pairs == pairs
    monkeypatch.setattr(module, "_score_threads", lambda: 1)
    assert correspondence_score(f, x, torch.from_numpy(valid)).score == pytest.approx(result.score, abs=1e-7)


def test_a_view_may_return_to_an_earlier_voxel(dtype):
    # View 0 visits voxels A, B, B, A: its last token belongs to its first group, and both groups have two
    # tokens, so both group sums must be finished when the view ends; view 1 visits B, then A.
    rng = np.random.default_rng(5)
    x = np.array([[[0.01, 0, 0], [0.25, 0, 0], [0.26, 0, 0], [0.02, 0, 0]], [[0.27, 0, 0], [0.03, 0, 0], [0.9, 0, 0], [0.9, 0, 0]]])
    f = rng.normal(size=(2, 4, 3))
    expected, pairs, _ = reference_multiview(f, x, np.ones((2, 4), bool), 0.1)
    result = correspondence_score(f.astype(dtype), x)
    assert result.score == pytest.approx(expected, abs=1e-6) and result.num_pairs == pairs == 2


def test_rows_of_voxels_out_of_view_are_reused(dtype, monkeypatch):
    # A camera sliding along x: view i sees voxels i and i + 1 (three tokens each, in shuffled order), so
    # voxel i is done at view i and its pooled row serves a later voxel; at most two rows are ever taken.
    import vega3d.analysis.voxel_kernels as kernels

    taken = []
    accumulate = kernels.accumulate

    def spy(*args):
        norm_sum = accumulate(*args)
        total, row_of = args[11][:2]
        taken.append((len(total), len(np.unique(row_of[row_of >= 0]))))
        return norm_sum

    monkeypatch.setattr(kernels, "accumulate", spy)
    rng = np.random.default_rng(7)
    v = 9
    x = np.zeros((v, 6, 3))
    for i in range(v):
        x[i, :, 0] = rng.permutation([i, i, i, i + 1, i + 1, i + 1]) * 0.1 + 0.05
    f = rng.normal(size=(v, 6, 5))
    expected, pairs, _ = reference_multiview(f, x, np.ones((v, 6), bool), 0.1)
    result = correspondence_score(f.astype(dtype), x)
    assert result.score == pytest.approx(expected, abs=1e-6) and result.num_pairs == pairs == v - 1
    assert {pool for pool, _ in taken} == {2} and max(used for _, used in taken) == 2 < v - 1  # rows given back, taken again


def test_pooled_rows_bound_the_voxels_in_view_at_once():
    from vega3d.analysis.voxel_kernels import most_in_view

    # tokens 0-9, one a view: voxels over [0, 3], [2, 5], [4, 9], [6, 7] overlap two at a time at most
    first, last, slot = np.array([0, 2, 4, 6]), np.array([3, 5, 9, 7]), np.arange(4)
    assert most_in_view(first, last, slot, 1, 10) == 2
    assert most_in_view(first, last, np.array([0, -1, 1, 2]), 1, 10) == 2  # voxels without a slot take no row
    assert most_in_view(first, last, slot, 4, 3) == 3  # 4 tokens a view: views 0, 0-1, 1-2, 1: three share view 1
    assert most_in_view(np.array([0, 1, 2]), np.array([9, 8, 7]), np.arange(3), 1, 10) == 3  # nested
    assert most_in_view(np.array([], np.int64), np.array([], np.int64), np.array([], np.int32), 1, 1) == 0


@pytest.mark.parametrize("seed", range(3))
def test_adjacent_matches_pairwise_reference(seed, dtype):
    rng = np.random.default_rng(10 + seed)
    v, n, c = 5, 30, 4
    f = rng.normal(size=(v, n, c)).astype(dtype)
    x = rng.uniform(0, 0.35, size=(v, n, 3))
    valid = rng.random((v, n)) > 0.3
    result = correspondence_score(f, x, torch.from_numpy(valid), protocol="adjacent")
    expected = reference_adjacent(f.astype(np.float64), x, valid, 0.1)
    np.testing.assert_allclose(result.pair_scores, expected, atol=1e-6)
    assert result.score == pytest.approx(np.nanmean(expected), abs=1e-6)


def test_hand_computed_two_views():
    # Voxel A: view 0 has two tokens (merged into one prototype), view 1 one token -> 1 pair.
    # Voxel B: seen by views 0 and 1 -> 1 pair; voxel C: only view 1 -> ignored.
    f = torch.tensor([[[1.0, 0.0], [1.0, 2.0], [0.0, 1.0]], [[1.0, 1.0], [0.0, 1.0], [5.0, 5.0]]])
    x = torch.tensor([[[0.01, 0, 0], [0.05, 0, 0], [0.25, 0, 0]], [[0.02, 0, 0], [0.22, 0, 0], [0.95, 0, 0]]])
    r = correspondence_score(f, x)
    cos_a = (np.array([2.0, 2.0]) / np.sqrt(8)) @ (np.array([1.0, 1.0]) / np.sqrt(2))  # mean(1,0;1,2)=(1,1)
    cos_b = 1.0
    assert r.score == pytest.approx((cos_a + cos_b) / 2)
    assert (r.num_pairs, r.num_voxels) == (2, 2)


def test_pair_weighting_counts_voxels_with_more_views_more():
    # Voxel A seen by 3 views (3 pairs, cosine 1), voxel B by 2 views (1 pair, cosine 0): 3/4, not 1/2.
    f = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [3.0, 0.0]]])
    x = torch.tensor([[[0.0, 0, 0], [0.5, 0, 0]], [[0.0, 0, 0], [0.5, 0, 0]], [[0.0, 0, 0], [9.0, 0, 0]]])
    r = correspondence_score(f, x)
    assert r.score == pytest.approx(0.75)
    assert r.num_pairs == 4


def test_view_consistent_features_score_one_and_token_map():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 2, size=(6, 50, 3))
    embed = torch.randn(1000, 16, generator=torch.Generator().manual_seed(0))
    cell = np.floor(points / 0.1).astype(int)
    keys = torch.from_numpy((cell[..., 0] * 400 + cell[..., 1] * 20 + cell[..., 2]) % 1000)
    r = correspondence_score(embed[keys], points, token_scores=True)
    assert r.score == pytest.approx(1.0, abs=1e-6)
    seen = ~torch.isnan(r.token_scores)
    assert seen.any() and torch.allclose(r.token_scores[seen], torch.ones(int(seen.sum())), atol=1e-5)


def test_token_scores_average_to_voxel_cosines():
    f = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])
    x = torch.zeros(3, 1, 3)
    r = correspondence_score(f, x, token_scores=True)
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(r.token_scores[:, 0].numpy(), [(0 + s) / 2, (0 + s) / 2, s], atol=1e-6)


def test_nan_when_no_voxel_is_seen_twice():
    f = torch.randn(2, 3, 4)
    x = torch.tensor([[[0.0, 0, 0]] * 3, [[5.0, 5, 5]] * 3])
    r = correspondence_score(f, x)
    assert math.isnan(r.score) and r.num_pairs == 0
    a = correspondence_score(f, x, protocol="adjacent")
    assert math.isnan(a.score) and math.isnan(a.pair_scores[0])


def test_upcast_chunks_match_features_read_in_place(monkeypatch):
    import vega3d.analysis.correspondence as module

    g = torch.Generator().manual_seed(3)
    f, x = torch.randn(9, 20, 6, generator=g), torch.rand(9, 20, 3, generator=g) * 0.5
    whole = correspondence_score(f, x, token_scores=True)
    whole_adj = correspondence_score(f, x, protocol="adjacent")
    monkeypatch.setattr(module, "_CHUNK_ELEMENTS", 20 * 6 * 2)  # two views per chunk
    for other in (f.double(), f.bfloat16(), f.transpose(0, 1).contiguous().transpose(0, 1)):  # the last: not contiguous
        expected = whole if other.dtype != torch.bfloat16 else correspondence_score(other.float(), x, token_scores=True)
        chunked = correspondence_score(other, x, token_scores=True)
        # Sums are float32 and chunking changes their order: equal to float32 precision.
        assert chunked.score == pytest.approx(expected.score, abs=1e-6)
        torch.testing.assert_close(chunked.token_scores, expected.token_scores, equal_nan=True, atol=1e-5, rtol=0)
    np.testing.assert_allclose(correspondence_score(f.double(), x, protocol="adjacent").pair_scores, whole_adj.pair_scores, atol=1e-6)


def test_sparse_voxel_grid_gives_the_same_ids_without_a_table(monkeypatch):
    import vega3d.analysis.correspondence as module

    g = torch.Generator().manual_seed(4)
    f, x = torch.randn(6, 30, 5, generator=g), torch.rand(6, 30, 3, generator=g) * 0.6
    table = correspondence_score(f, x, token_scores=True)
    monkeypatch.setattr(module, "_TABLE_ENTRIES", 0)
    monkeypatch.setattr(module, "_TABLE_ENTRIES_PER_TOKEN", 0)
    unique = correspondence_score(f, x, token_scores=True)
    assert unique.score == pytest.approx(table.score, abs=1e-7) and unique.num_pairs == table.num_pairs
    torch.testing.assert_close(unique.token_scores, table.token_scores, equal_nan=True, atol=1e-6, rtol=0)


def test_huge_coordinate_extent_uses_exact_fallback():
    f = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]])
    x = torch.tensor([[[0.0, 0, 0], [1e18, 1e18, 1e18]], [[0.0, 0, 0], [1e18, 1e18, 1e18]]], dtype=torch.float64)
    assert correspondence_score(f, x).score == pytest.approx(1.0)


@pytest.mark.parametrize(
    "features, coords, valid, message",
    [
        (torch.randn(2, 3), torch.zeros(2, 3, 3), None, "features must be \\[V, N, C\\]"),
        (torch.randn(2, 3, 4), torch.zeros(2, 4, 3), None, "coords must be \\[V, N, 3\\]"),
        (torch.randn(2, 3, 4), torch.zeros(2, 3, 3), torch.ones(3, 2, dtype=torch.bool), "valid must be \\[V, N\\]"),
        (torch.randn(2, 3, 4), torch.zeros(2, 3, 3), torch.zeros(2, 3, dtype=torch.bool), "no valid token"),
        (torch.randn(0, 3, 4), torch.zeros(0, 3, 3), None, "empty"),
        (torch.tensor([[[1.0], [float("nan")]]]), torch.zeros(1, 2, 3), None, "features contain 1 non-finite value.*view 0, token 1"),
        (torch.ones(1, 2, 1), torch.tensor([[[0.0, 0, 0], [0, float("inf"), 0]]]), None, "coords contain 1 non-finite"),
    ],
)
def test_bad_input_is_named(features, coords, valid, message):
    with pytest.raises(ValueError, match=message):
        correspondence_score(features, coords, valid)


def test_masked_non_finite_values_are_allowed():
    f = torch.tensor([[[1.0], [float("nan")]], [[1.0], [2.0]]])
    x = torch.tensor([[[0.0, 0, 0], [float("inf"), 0, 0]], [[0.0, 0, 0], [3.0, 0, 0]]])
    valid = torch.tensor([[True, False], [True, True]])
    assert correspondence_score(f, x, valid).score == pytest.approx(1.0)
    assert correspondence_score(f, x, valid, protocol="adjacent").score == pytest.approx(1.0)
    # a single frame has no pair to score; its masked NaN is no error either, an unmasked one is
    assert math.isnan(correspondence_score(f[:1], x[:1], valid[:1], protocol="adjacent").score)
    with pytest.raises(ValueError, match="features contain 1 non-finite value.*view 0, token 1"):
        correspondence_score(f[:1], torch.zeros(1, 2, 3), protocol="adjacent")


def test_bad_protocol_and_voxel_size():
    with pytest.raises(ValueError, match="protocol"):
        correspondence_score(torch.ones(1, 1, 1), torch.zeros(1, 1, 3), protocol="pairs")
    with pytest.raises(ValueError, match="voxel_size"):
        correspondence_score(torch.ones(1, 1, 1), torch.zeros(1, 1, 3), voxel_size=0)


class NoCacheLocation:
    """A numba cache locator that never applies: what numba finds on a read-only install without a user cache."""

    @classmethod
    def from_function(cls, function, source):
        return None


def test_without_a_writable_cache_the_loops_compile_in_process_with_one_warning(monkeypatch):
    # numba looks for a cache location when a function is decorated, and raises if there is none.
    import numba

    from vega3d.analysis import voxel_kernels

    monkeypatch.setattr(numba.config, "CACHE_LOCATOR_CLASSES", f"{__name__}.NoCacheLocation")
    monkeypatch.setattr(voxel_kernels._compiled, "warned", False)
    with pytest.warns(UserWarning, match="cannot be cached.*NUMBA_CACHE_DIR") as caught:
        first = voxel_kernels._compiled()(lambda x: x + 1)
        second = voxel_kernels._compiled(inline="always")(lambda x: 2 * x)
    assert len(caught) == 1 and first(1) == 2 and second(3) == 6
