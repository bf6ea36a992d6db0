"""The reranked candidate generator (index/clusters.py) and the lsh generators by name."""

from __future__ import annotations

import pytest
import torch

from triton_softmax import SampledSoftmaxLoss
from triton_softmax.index.base import CandidateIndex
from triton_softmax.index.clusters import ClusterIndex
from triton_softmax.index.generators import make_generator
from triton_softmax.index.rerank import dedupe_rows, rerank_union
from triton_softmax.loss import exact_topk, make_index

GENERATORS = {
    "clusters": lambda d, **kw: ClusterIndex(d, num_lists=16, nprobe=2, **kw),
    "clusters_mips": lambda d, **kw: ClusterIndex(d, num_lists=16, nprobe=2, mode="mips", **kw),
    "clusters_copy": lambda d, **kw: ClusterIndex(
        d, num_lists=16, nprobe=2, live_rerank=False, **kw
    ),
}


def _mixture(n: int, d: int, centers: int, seed: int = 0):
    """Rows around `centers` random directions with varied norms: structure a data-dependent
    index can find."""
    g = torch.Generator().manual_seed(seed)
    c = torch.nn.functional.normalize(torch.randn(centers, d, generator=g), dim=1)
    which = torch.randint(centers, (n,), generator=g)
    w = c[which] + 0.3 * torch.randn(n, d, generator=g)
    w = w * (0.5 + torch.rand(n, 1, generator=g))
    return w


def _valid_distinct(ids: torch.Tensor, n: int, k: int) -> None:
    assert ids.shape[1] == k and ids.dtype == torch.int64
    assert bool(((ids >= 0) & (ids < n)).all())
    for row in ids:
        assert row.unique().numel() == k


@pytest.mark.parametrize("name", list(GENERATORS))
def test_follows_the_protocol(name):
    index = GENERATORS[name](8)
    assert isinstance(index, CandidateIndex)
    assert not index.built
    index.build(torch.randn(300, 8))
    assert index.built and index.n == 300
    assert index.state_dict()["kind"] == "clusters"


@pytest.mark.parametrize("name", list(GENERATORS))
@pytest.mark.parametrize("n,k", [(2000, 63), (40, 40), (50, 33), (200, 150)])
def test_search_returns_k_valid_distinct_ids_whenever_k_classes_exist(name, n, k):
    torch.manual_seed(1)
    w = torch.randn(n, 8)
    index = GENERATORS[name](8).build(w)
    ids = index.search(torch.randn(17, 8), k)
    _valid_distinct(ids, n, k)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_short_rows_are_padded_without_the_global_rng(name):
    """nprobe=1 of 16 lists holds about n / 16 = 25 classes, under k = 40: every row is padded
    with random ids. They are drawn from a generator seeded by the index, not torch's global
    RNG (the training run's dropout and draws): the RNG does not move, the same search repeats
    exactly, and a caller's generator still decides the padding."""
    w = _mixture(400, 8, 4)
    index = GENERATORS[name](8)
    index.set_nprobe(1)
    index.build(w)
    h = torch.randn(12, 8, generator=torch.Generator().manual_seed(3))
    state = torch.get_rng_state()
    first = index.search(h, 40)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(index.search(h, 40), first)
    _valid_distinct(first, 400, 40)
    listed = index.search(h, 40, generator=torch.Generator().manual_seed(index.seed))
    other = index.search(h, 40, generator=torch.Generator().manual_seed(index.seed + 1))
    assert torch.equal(listed, first) and not torch.equal(other, first)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_search_pads_with_minus_one_only_past_n(name):
    w = torch.randn(10, 8)
    ids = GENERATORS[name](8).build(w).search(torch.randn(5, 8), 16)
    assert bool((ids[:, :10] >= 0).all()) and bool((ids[:, 10:] == -1).all())
    for row in ids[:, :10]:
        assert sorted(row.tolist()) == list(range(10))


@pytest.mark.parametrize("name", list(GENERATORS))
def test_masked_classes_never_enter_s(name):
    torch.manual_seed(2)
    n, k = 400, 32
    w = torch.randn(n, 8)
    bias = torch.zeros(n)
    masked = torch.randperm(n)[: n - k]  # exactly k selectable classes are left
    bias[masked] = float("-inf")
    # the masked rows are the ones the queries point at: a buggy index would return them
    h = w[masked[:9]] * 5
    ids = GENERATORS[name](8).build(w, bias).search(h, k)
    keep = torch.ones(n, dtype=torch.bool)
    keep[masked] = False
    _valid_distinct(ids, n, k)
    assert bool(keep[ids].all())
    more = GENERATORS[name](8).build(w, bias).search(h, k + 5)
    assert bool(keep[more[:, :k]].all()) and bool((more[:, k:] == -1).all())


@pytest.mark.parametrize("name", list(GENERATORS))
def test_nan_row_raises_with_validate_and_is_in_every_search_otherwise(name):
    """Left out of the lists, and (nonfinite.py: every index's rule) put into every search and
    union, in the last slot, so a row's loss is NaN where torch's is."""
    w = torch.randn(300, 8)
    w[7, 3] = float("nan")
    with pytest.raises(ValueError, match="weight"):
        GENERATORS[name](8, validate=True).build(w)
    index = GENERATORS[name](8).build(w)
    assert index.num_excluded == 1
    h = torch.randn(6, 8)
    ids = index.search(h, 64)
    _valid_distinct(ids, 300, 64)
    assert bool((ids[:, -1] == 7).all()) and not bool((ids[:, :-1] == 7).any())
    assert bool((index.union(h) == 7).any(dim=1).all())


def test_rerank_union_is_the_exact_top_k_of_the_union():
    torch.manual_seed(3)
    n, d, N, k = 500, 16, 12, 10
    w, b, h = torch.randn(n, d), torch.randn(n), torch.randn(N, d)
    union = torch.randint(-1, n, (N, 80))  # duplicates and -1 included
    got = rerank_union(h, w, b, union, k)
    for i in range(N):
        cand = union[i][union[i] >= 0].unique()
        z = h[i] @ w[cand].T + b[cand]
        want = cand[z.topk(k).indices]
        assert got[i].tolist() == want.tolist()


def test_dedupe_rows():
    ids = torch.tensor([[3, -1, 3, 1, 1], [-1, -1, -1, -1, -1]])
    assert dedupe_rows(ids).tolist() == [[1, 3, -1, -1, -1], [-1] * 5]


def test_finds_most_of_the_exact_top_k_on_structured_rows():
    torch.manual_seed(4)
    n, d, N, k = 4000, 16, 64, 16
    w = _mixture(n, d, 40)
    h = 3 * w[torch.randint(n, (N,))] + 0.3 * torch.randn(N, d)
    _, top = exact_topk(h, w, k)
    index = ClusterIndex(d, num_lists=64, nprobe=6).build(w)
    ids = index.search(h, k)
    recall = (top.unsqueeze(2) == ids.unsqueeze(1)).any(2).float().mean().item()
    frac = index.fraction_scored(h)
    # today's collision-count tables on the same problem, for scale
    old = make_index("lsh", n, d, k + 1).build(w).search(h, k)
    old_recall = (top.unsqueeze(2) == old.unsqueeze(1)).any(2).float().mean().item()
    assert frac < 0.25
    assert recall > 0.7 and recall > old_recall + 0.2


def test_clusters_rerank_uses_the_live_weights():
    torch.manual_seed(5)
    w = torch.randn(1000, 8)
    index = ClusterIndex(8, num_lists=8, nprobe=2).build(w)
    h = torch.randn(1, 8)
    union = index.union(h)[0]
    j = int(union[union >= 0][-1])  # some member of the probed lists
    with torch.no_grad():
        w[j] = h[0] * 100  # now the best logit by far, without a rebuild
    assert int(index.search(h, 5)[0, 0]) == j
    stale = ClusterIndex(8, num_lists=8, nprobe=2, live_rerank=False).build(w.clone())
    assert int(stale.search(h, 5)[0, 0]) == j


def test_rerank_copy_ranks_by_the_rows_of_the_last_refresh():
    """rerank_copy=True: the lists are scored from the copy taken at build (FAISS's
    staleness), so a row changed since then ranks by its old logit until the next refresh."""
    torch.manual_seed(5)
    w = torch.randn(1000, 8)
    layer = SampledSoftmaxLoss(
        weight=torch.nn.Parameter(w.clone()), method="lsh", rerank_copy=True, num_candidates=6
    )
    layer.refresh("lsh")
    index = layer.index
    assert not index.live_rerank and "a copy of the rows" in layer.explain()
    h = torch.randn(3, 8)
    before = index.search(h, 5)
    assert torch.equal(before, ClusterIndex(8, seed=0).build(w).search(h, 5))
    union = index.union(h[:1])[0]
    j = int(union[union >= 0][-1])
    with torch.no_grad():
        layer.weight[j] = h[0] * 100  # the best logit by far under the live weights
    assert torch.equal(index.search(h, 5), before)  # not seen until the refresh
    layer.refresh("lsh")
    assert int(layer.index.search(h, 5)[0, 0]) == j
    with pytest.raises(ValueError, match="rerank_copy"):
        SampledSoftmaxLoss(500, 8, method="lsh", lsh_generator="tables", rerank_copy=True)
    with pytest.raises(ValueError, match="rerank_copy must be True, False or None"):
        SampledSoftmaxLoss(500, 8, method="lsh", rerank_copy="yes")


def test_rerank_copy_default_copies_on_a_cpu_within_the_byte_cap(monkeypatch):
    """rerank_copy=None (the default): a copy of CPU rows while it fits AUTO_COPY_BYTES, the
    live rows above it; explain() names the rule; True / False are kept as given."""
    from triton_softmax.index import clusters

    w = torch.randn(1000, 8)
    layer = SampledSoftmaxLoss(
        weight=torch.nn.Parameter(w.clone()), method="lsh", num_candidates=16, num_uniform=16
    )
    layer.refresh("lsh")
    assert not layer.index.live_rerank and layer.index.rows_copy_t is not None
    assert "a copy of the rows taken at refresh on a CPU, live rows on CUDA" in layer.explain()
    monkeypatch.setattr(clusters, "AUTO_COPY_BYTES", 1000 * 8 * 4 - 1)
    layer.refresh("lsh")  # the same index, resolved again at this build
    assert layer.index.live_rerank and layer.index.rows_copy_t is None
    h = torch.randn(4, 8)
    live = layer.index.search(h, 5)
    monkeypatch.setattr(clusters, "AUTO_COPY_BYTES", 1 << 32)
    layer.refresh("lsh")
    assert torch.equal(layer.index.search(h, 5), live)  # same lists, same rows: same ids
    for given in (True, False):
        index = ClusterIndex(8, live_rerank=given).build(w)
        assert index.live_rerank is given


def test_lsh_nprobe_sets_the_lists_read_per_query():
    w = torch.randn(2000, 8)
    layer = SampledSoftmaxLoss(
        weight=torch.nn.Parameter(w), method="lsh", lsh_nprobe=3, num_candidates=16
    )
    layer.refresh("lsh")
    h = torch.randn(5, 8)
    assert layer.index.effective_nprobe == 3 and layer.index.probe_lists(h).shape == (5, 3)
    assert "nprobe=3" in layer.explain()
    for bad in (0, 2.5, "4"):
        with pytest.raises(ValueError, match="lsh_nprobe"):
            SampledSoftmaxLoss(500, 8, method="lsh", lsh_nprobe=bad)
    with pytest.raises(ValueError, match="lsh_nprobe"):
        SampledSoftmaxLoss(500, 8, method="lsh", lsh_generator="tables", lsh_nprobe=4)
    with pytest.raises(ValueError, match="lsh_nprobe"):
        SampledSoftmaxLoss(500, 8, method="lsh", candidate_scheme="bucket_shared", lsh_nprobe=4)


def test_clusters_lists_are_balanced_and_cover_every_row():
    torch.manual_seed(6)
    w = _mixture(3000, 8, 3)  # three blobs into 30 lists: k-means alone would be lopsided
    index = ClusterIndex(8, num_lists=30, nprobe=3, balance=2.0).build(w)
    sizes = index.offsets[1:] - index.offsets[:-1]
    assert int(sizes.max()) <= 2 * 3000 / 30
    assert sorted(index.order.tolist()) == list(range(3000))


def test_clusters_refresh_is_warm_and_update_rows_reassigns():
    torch.manual_seed(7)
    w = _mixture(2000, 8, 20)
    index = ClusterIndex(8, num_lists=20, nprobe=4, iters=6, refresh_iters=1).build(w)
    c0 = index.centroids.clone()
    w2 = w + 0.01 * torch.randn_like(w)
    index.build(w2)  # warm start: one Lloyd iteration from the old centroids
    assert index.centroids.shape[0] >= c0.shape[0]
    assert torch.allclose(index.centroids[: c0.shape[0]], c0, atol=0.2)
    rows = torch.tensor([3, 99, 1500])
    with torch.no_grad():
        w2[rows] = w2[torch.tensor([0, 0, 0])]  # move three rows onto row 0
    assert index.update_rows(w2, None, rows)
    a = index.assign
    assert bool((a[rows] == a[0]).all())
    assert sorted(index.order.tolist()) == list(range(2000))
    with torch.no_grad():
        w2[5] = 100.0  # outgrows M: the caller must rebuild
    assert not index.update_rows(w2, None, torch.tensor([5]))


def test_make_index_and_module_options():
    assert isinstance(make_index("lsh", 1000, 8, 64, lsh_generator="clusters"), ClusterIndex)
    assert isinstance(make_generator("clusters", 1000, 8), ClusterIndex)
    layer = SampledSoftmaxLoss(500, 8, method="lsh", num_candidates=16, num_uniform=8)
    assert layer.lsh_generator == "clusters"
    with pytest.raises(ValueError, match="lsh_generator"):
        SampledSoftmaxLoss(500, 8, method="lsh", lsh_generator="kmeans")
    with pytest.raises(ValueError, match="lsh_generator"):
        SampledSoftmaxLoss(
            500, 8, method="lsh", candidate_scheme="bucket_shared", lsh_generator="clusters"
        )
    shared = SampledSoftmaxLoss(500, 8, method="lsh", candidate_scheme="bucket_shared")
    assert shared.lsh_generator == "tables"


@pytest.mark.parametrize("retired", ["simhash", "query_clusters"])
def test_a_retired_generator_is_refused_with_what_to_use_instead(retired):
    for make in (
        lambda: SampledSoftmaxLoss(500, 8, method="lsh", lsh_generator=retired),
        lambda: make_index("lsh", 1000, 8, 64, lsh_generator=retired),
        lambda: make_generator(retired, 1000, 8),
    ):
        with pytest.raises(ValueError, match=f"lsh_generator='{retired}'.*retired.*'clusters'"):
            make()


@pytest.mark.parametrize("generator", ["clusters", "tables"])
def test_module_trains_with_each_generator(generator):
    torch.manual_seed(8)
    n, d = 3000, 16
    layer = SampledSoftmaxLoss(
        n,
        d,
        method="lsh",
        lsh_generator=generator,
        num_candidates=32,
        num_uniform=16,
        refresh_every=5,
        search_min_mass=None,  # the generator searches from step 0
        bias=True,
    )
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    h, y = torch.randn(64, d), torch.randint(0, n, (64,))
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = layer(h, y)
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < 0.5 * first
    assert (
        type(layer.index).__name__ == {"clusters": "ClusterIndex", "tables": "LSHIndex"}[generator]
    )
    assert layer.refresh_count >= 6
    assert {"clusters": "lsh generator", "tables": "lsh K="}[generator] in layer.explain(64)


def test_module_masked_bias_and_nan_rows():
    n, d = 600, 8
    layer = SampledSoftmaxLoss(
        n, d, method="lsh", search_min_mass=None, num_candidates=16, num_uniform=0, bias=True
    )
    with torch.no_grad():
        layer.bias[:300] = float("-inf")
    h, y = torch.randn(8, d), torch.randint(300, n, (8,))
    loss = layer(h, y)
    assert torch.isfinite(loss)
    ids = layer.index.search(h, 15)
    assert bool((ids >= 300).all())
    with torch.no_grad():
        layer.weight[400, 0] = float("nan")
    layer.refresh()  # without validate: out of the lists, explain() says so, and (nonfinite.py,
    # the rule of every index) the NaN class is in every search, so the loss is NaN as torch's
    found = layer.index.search(h, 15)
    assert bool((found[:, -1] == 400).all()) and int((found == 400).sum()) == 8
    assert "301 rows non-finite or masked" in layer.explain(8)
    assert torch.isnan(layer(h, y))
    strict = SampledSoftmaxLoss(
        n, d, method="lsh", search_min_mass=None, num_candidates=16, validate=True
    )
    with torch.no_grad():
        strict.weight[3, 1] = float("nan")
    with pytest.raises(ValueError, match="weight"):
        strict(h, y)


def test_clusters_checkpoint_restores_warm_refreshed_lists():
    torch.manual_seed(10)
    w = _mixture(2000, 8, 20)
    a = ClusterIndex(8, num_lists=20, nprobe=3).build(w)
    a.build(w + 0.05 * torch.randn_like(w))  # a warm refresh: lists depend on history
    b = ClusterIndex(8, num_lists=20, nprobe=3)
    b.load_state_dict(a.state_dict())
    b.build(w)  # the checkpoint's lists, not a cold k-means
    assert torch.equal(b.assign, a.assign) and torch.equal(b.centroids, a.centroids)
    cold = ClusterIndex(8, num_lists=20, nprobe=3).build(w)
    assert not torch.equal(cold.assign, a.assign)


def _tables(d: int):
    from triton_softmax.index.simhash import LSHIndex

    return LSHIndex(d, num_bits=6, num_tables=4, seed=3)


@pytest.mark.parametrize("n,k", [(2000, 63), (400, 150), (50, 33)])
def test_tables_fill_every_slot_whenever_k_classes_exist(n, k):
    """The SimHash tables (lsh_generator="tables") used to return -1 in the slots their capped
    buckets did not fill (23-38 of 63 on 2026-11-30); short rows are now filled from uniform
    classes by exact logit, and a search is a function of its input."""
    torch.manual_seed(1)
    w, h = torch.randn(n, 8), torch.randn(17, 8)
    index = _tables(8).build(w)
    ids = index.search(h, k)
    _valid_distinct(ids, n, k)
    assert torch.equal(ids, index.search(h, k))


def test_tables_never_return_masked_classes():
    torch.manual_seed(2)
    n, k = 400, 32
    w, bias = torch.randn(n, 8), torch.zeros(n)
    masked = torch.randperm(n)[: n - k]
    bias[masked] = float("-inf")
    keep = torch.ones(n, dtype=torch.bool)
    keep[masked] = False
    index = _tables(8).build(w, bias)
    ids = index.search(w[masked[:9]] * 5, k)
    _valid_distinct(ids, n, k)
    assert bool(keep[ids].all())
    assert not bool(index.any_nonfinite)  # a -inf bias masks; it is not a non-finite class
