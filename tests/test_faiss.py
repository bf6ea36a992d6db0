import pytest
import torch

from triton_softmax import FaissIndex, SampledSoftmaxLoss, exact_topk, recall_at_k

pytest.importorskip("faiss")


@pytest.mark.parametrize("bias", [False, True])
def test_flat_index_returns_exact_topk(bias):
    g = torch.Generator().manual_seed(0)
    n, d, N, k = 3000, 24, 50, 10
    W = torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g)
    b = torch.randn(n, generator=g) if bias else None
    h = torch.randn(N, d, generator=g)
    idx = FaissIndex("flat").build(W, b)
    got = idx.search(h, k)
    _, ref = exact_topk(h, W, k, b)
    assert got.dtype == torch.int64 and got.shape == (N, k)
    assert recall_at_k(got, ref) == 1.0


def test_ivf_with_all_lists_probed_is_exact_and_fewer_lists_is_not_worse_than_chance():
    g = torch.Generator().manual_seed(1)
    n, d, N = 2000, 16, 40
    W = torch.randn(n, d, generator=g)
    h = torch.randn(N, d, generator=g)
    _, ref = exact_topk(h, W, 5)
    full = FaissIndex("ivf", nlist=16, nprobe=16).build(W)
    assert recall_at_k(full.search(h, 5), ref) == 1.0
    part = FaissIndex("ivf", nlist=16, nprobe=2).build(W)
    assert recall_at_k(part.search(h, 5), ref) > 0.2


def test_k_larger_than_n_pads_with_minus_one():
    W = torch.randn(5, 4)
    ids = FaissIndex("flat").build(W).search(torch.randn(2, 4), 8)
    assert (ids[:, 5:] == -1).all() and (ids[:, :5] >= 0).all()


def test_bad_kind_and_search_before_build():
    with pytest.raises(ValueError, match="kind"):
        FaissIndex("hnsw")
    with pytest.raises(RuntimeError, match="build"):
        FaissIndex("flat").search(torch.randn(2, 4), 1)


@pytest.mark.parametrize("bias", [False, True])
def test_ivfpq_probing_every_list_finds_the_exact_top_k_among_a_few_times_k(bias):
    # odd widths (d = 23, and 24 + bias) take the zero column that pairs the PQ sub-quantizers
    g = torch.Generator().manual_seed(2)
    n, d, N, k = 4000, 23 if not bias else 24, 40, 5
    W = torch.randn(n, d, generator=g) * (0.5 + torch.rand(n, 1, generator=g))
    b = torch.randn(n, generator=g) if bias else None
    h = 3 * torch.randn(N, d, generator=g)
    _, ref = exact_topk(h, W, k, b)
    idx = FaissIndex("ivfpq", nlist=8, nprobe=8).build(W, b)
    got = idx.search(h, 8 * k)
    assert got.dtype == torch.int64 and got.shape == (N, 8 * k) and (got >= 0).all()
    assert recall_at_k(got, ref) > 0.9  # approximate scores: the top-k within 8k
    fewer = FaissIndex("ivfpq", nlist=8, nprobe=1).build(W, b)
    assert idx.tunable and recall_at_k(fewer.search(h, 8 * k), ref) < recall_at_k(got, ref)
    idx.set_nprobe(1)  # target_mass tunes nprobe between searches
    assert idx.index.nprobe == 1


def test_ivfpq_through_the_loss_trains_and_explains_itself():
    from triton_softmax import SampledSoftmaxLoss

    g = torch.Generator().manual_seed(3)
    n, d, N = 3000, 16, 32
    W = torch.nn.Parameter(0.1 * torch.randn(n, d, generator=g))
    layer = SampledSoftmaxLoss(
        weight=W, method="faiss", faiss_index="ivfpq", num_candidates=16, num_uniform=16
    )
    assert "ivfpq" in layer.explain() and "approximate ranking" in layer.explain()
    assert "per-example T" in layer.explain()  # candidate_scheme="auto"
    h = torch.randn(N, d, generator=g, requires_grad=True)
    y = torch.randint(0, n, (N,), generator=g)
    loss = layer(h, y)
    loss.backward()
    assert torch.isfinite(loss) and W.grad is not None and torch.isfinite(h.grad).all()
    with pytest.raises(ValueError, match="ivfpq"):
        SampledSoftmaxLoss(weight=W, method="faiss", faiss_index="ivfp")


def test_auto_kind_is_flat_below_1e5_then_ivfpq_on_the_host(monkeypatch):
    from triton_softmax.index import factory

    assert factory.faiss_kind("auto", 99_999) == "flat"
    assert factory.faiss_kind("auto", 100_000) == "ivfpq"
    assert factory.faiss_kind("auto", 100_000, "cpu") == "ivfpq"
    assert factory.faiss_kind("ivf", 10**6) == "ivf"  # an explicit kind stays
    # faiss-gpu serving CUDA weights keeps IVF-Flat (its IVF-PQ has no fast-scan)
    monkeypatch.setattr(factory, "faiss_gpu_available", lambda: True)
    assert factory.faiss_kind("auto", 10**6, "cuda") == "ivf"
    assert factory.faiss_kind("auto", 10**6, "cpu") == "ivfpq"
    monkeypatch.setattr(factory, "faiss_gpu_available", lambda: False)
    assert factory.faiss_kind("auto", 10**6, "cuda") == "ivfpq"  # faiss-cpu: host copy


def test_ivfpq_over_too_few_rows_to_train_its_codes_builds_the_exact_flat_index():
    from triton_softmax.index.faiss import PQ_MIN_ROWS

    g = torch.Generator().manual_seed(4)
    for n in (1, 5, PQ_MIN_ROWS - 1):
        W, h = torch.randn(n, 7, generator=g), torch.randn(3, 7, generator=g)
        idx = FaissIndex("ivfpq").build(W)
        assert idx.built_kind == "flat" and not idx.tunable
        k = min(n, 4)
        assert recall_at_k(idx.search(h, k), exact_topk(h, W, k)[1]) == 1.0
    assert FaissIndex("ivfpq", nlist=4).build(torch.randn(PQ_MIN_ROWS, 8)).built_kind == "ivfpq"
    from triton_softmax import SampledSoftmaxLoss

    kw = dict(method="faiss", faiss_index="ivfpq", num_candidates=8, num_uniform=8)
    small = SampledSoftmaxLoss(600, 8, **kw)
    assert "faiss index flat (ivfpq trains" in small.explain()


def _masked_problem(n: int, selectable: int, d: int = 8, seed: int = 2):
    """Rows, a bias masking all but `selectable` classes with -inf, and queries pointing at
    masked rows (a buggy index would return them)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, d, generator=g)
    bias = torch.zeros(n)
    masked = torch.randperm(n, generator=g)[: n - selectable]
    bias[masked] = float("-inf")
    keep = torch.ones(n, dtype=torch.bool)
    keep[masked] = False
    return w, bias, w[masked[:9]] * 5, keep


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
def test_masked_classes_never_enter_s(kind):
    """A -inf bias masks a class (a padded vocabulary): FAISS must not spend slots of S on
    masked classes (before 2026-12-01 06:00 it returned them: they were indexed as zero rows)."""
    n, k = 1500, 32
    w, bias, h, keep = _masked_problem(n, 700)  # 700 >= PQ_MIN_ROWS: a real ivfpq build
    index = FaissIndex(kind, nprobe=2).build(w, bias)
    assert index.built_kind == kind and index.n == n and index.num_indexed == 700
    ids = index.search(h, k)
    assert bool((ids >= 0).all()) and bool(keep[ids].all())
    assert all(row.unique().numel() == k for row in ids)
    w, bias, h, keep = _masked_problem(400, 20)  # k above the selectable classes: -1 after them
    ids = FaissIndex(kind).build(w, bias).search(h, k)
    assert bool(keep[ids[:, :20]].all()) and bool((ids[:, 20:] == -1).all())


@pytest.mark.parametrize("kind", ["ivf", "ivfpq"])
def test_search_returns_k_classes_whenever_the_index_holds_k_even_with_one_list_probed(kind):
    g = torch.Generator().manual_seed(3)
    w, h = torch.randn(5000, 16, generator=g), torch.randn(32, 16, generator=g)
    index = FaissIndex(kind, nprobe=1).build(w)  # about 70 rows per list, k = 200
    ids = index.search(h, 200)
    assert bool((ids >= 0).all()) and all(row.unique().numel() == 200 for row in ids)
    assert index.index.nprobe == 1  # the short rows' wider search does not stick


def test_nan_class_is_in_every_search_and_a_masked_class_is_not():
    """nonfinite.py's rule: the first class whose logit can be NaN/+inf joins every search;
    a -inf bias only masks (it was taken for a non-finite class before 2026-12-01 06:00)."""
    g = torch.Generator().manual_seed(4)
    w, h = torch.randn(300, 8, generator=g), torch.randn(6, 8, generator=g)
    bias = torch.zeros(300)
    bias[5] = float("-inf")
    bias[9] = float("nan")
    ids = FaissIndex("ivf", nlist=8, nprobe=2).build(w, bias).search(h, 10)
    assert bool((ids[:, -1] == 9).all()) and not bool((ids == 5).any())
    assert bool((ids[:, :-1] >= 0).all())
    layer = SampledSoftmaxLoss(
        weight=torch.nn.Parameter(w), bias=True, method="faiss", num_candidates=8, num_uniform=8
    )
    with torch.no_grad():
        layer.bias.copy_(bias)
    layer.refresh("faiss")
    assert "2 rows non-finite or masked" in layer.explain()
