"""Public API: module and functional forms, torch semantics, validation, sparse steps, training."""

import math

import pytest
import torch
import torch.nn.functional as F

import triton_softmax as ts
from triton_softmax import SampledSoftmaxLoss, sampled_softmax_cross_entropy

METHODS = ["full", "lsh", "faiss"]


def _data(N=32, n=300, d=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(N, d, generator=g, dtype=dtype),
        torch.randn(n, d, generator=g, dtype=dtype),
        torch.randint(0, n, (N,), generator=g),
    )


# ---- exactness and torch semantics ------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [False, True])
def test_full_path_equals_torch_cross_entropy(reduction, bias):
    h, W, y = _data(dtype=torch.float64)
    y[3] = y[7] = -100
    b = torch.randn(W.shape[0], dtype=torch.float64) if bias else None
    h.requires_grad_(True)
    W.requires_grad_(True)
    out = sampled_softmax_cross_entropy(h, W, y, b, method="full", reduction=reduction)
    ref = F.cross_entropy(h @ W.T + (b if bias else 0), y, reduction=reduction)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    go = torch.rand_like(ref)
    g1 = torch.autograd.grad((out * go).sum(), (h, W))
    g2 = torch.autograd.grad((ref * go).sum(), (h, W))
    for a, r in zip(g1, g2):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
    if reduction == "none":
        assert out[3] == 0 and out[7] == 0


@pytest.mark.parametrize("method", ["lsh", "faiss"])
def test_sampled_paths_exact_when_candidates_cover_all_classes(method):
    """|S| >= n: the dispatcher runs the exact loss (sampling saves nothing)."""
    h, W, y = _data(n=40, dtype=torch.float64)
    out = sampled_softmax_cross_entropy(h, W, y, method=method, num_candidates=40, num_uniform=0)
    torch.testing.assert_close(out, F.cross_entropy(h @ W.T, y), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_all_rows_ignored_behaves_like_torch(method):
    h, W, y = _data(n=500)
    y[:] = -100
    h.requires_grad_(True)
    mean = sampled_softmax_cross_entropy(h, W, y, method=method, num_candidates=16, num_uniform=8)
    assert math.isnan(mean.item()) and math.isnan(F.cross_entropy(h @ W.T, y).item())
    total = sampled_softmax_cross_entropy(
        h, W, y, method=method, reduction="sum", num_candidates=16, num_uniform=8
    )
    total.backward()
    assert total.item() == 0.0 and (h.grad == 0).all()


@pytest.mark.parametrize("method", METHODS)
def test_ignored_rows_get_zero_gradient(method):
    h, W, y = _data(n=500)
    y[::3] = -100
    h.requires_grad_(True)
    loss = sampled_softmax_cross_entropy(h, W, y, method=method, num_candidates=16, num_uniform=8)
    loss.backward()
    assert (h.grad[::3] == 0).all() and (h.grad[1::3] != 0).any()


def test_empty_batch():
    W = torch.randn(50, 4)
    for method in METHODS:
        out = sampled_softmax_cross_entropy(
            torch.randn(0, 4),
            W,
            torch.zeros(0, dtype=torch.long),
            method=method,
            reduction="sum",
            num_candidates=8,
            num_uniform=4,
        )
        assert out.item() == 0.0


def test_one_class_and_one_row():
    W = torch.randn(1, 3, requires_grad=True)
    out = sampled_softmax_cross_entropy(torch.randn(1, 3), W, torch.tensor([0]))
    assert out.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_accumulate_in_fp32(method, dtype):
    h, W, y = _data(n=2000, dtype=torch.float32)
    h16, W16 = h.to(dtype).requires_grad_(True), W.to(dtype).requires_grad_(True)
    loss = sampled_softmax_cross_entropy(
        h16,
        W16,
        y,
        method=method,
        num_candidates=64,
        num_uniform=64,
        generator=torch.Generator().manual_seed(0),
    )
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert h16.grad.dtype == dtype and W16.grad.dtype == dtype
    ref = sampled_softmax_cross_entropy(
        h16.float(),
        W16.float(),
        y,
        method=method,
        num_candidates=64,
        num_uniform=64,
        generator=torch.Generator().manual_seed(0),
    )
    # same candidates (same index, same seed), fp32 arithmetic: only input rounding differs
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)


def test_large_logits_stay_finite():
    h = torch.full((4, 2), 100.0)
    W = torch.tensor([[50.0, 50.0], [-50.0, -50.0], [49.0, 50.0]])
    y = torch.tensor([0, 1, 2, 0])
    for method in ("full", "lsh"):
        out = sampled_softmax_cross_entropy(
            h, W, y, method=method, reduction="none", num_candidates=1, num_uniform=1
        )
        assert torch.isfinite(out).all()
    ref = F.cross_entropy(h @ W.T, y, reduction="none")
    torch.testing.assert_close(
        sampled_softmax_cross_entropy(h, W, y, method="full", reduction="none"), ref
    )


def test_non_contiguous_inputs_match_contiguous():
    h, W, y = _data(n=400, d=12)
    hT = h.T.contiguous().T  # transposed storage
    Wbig = torch.randn(400, 24)
    Wbig[:, ::2] = W
    W_view = Wbig[:, ::2]
    assert not hT.is_contiguous() and not W_view.is_contiguous()
    for method in METHODS:
        kw = dict(method=method, num_candidates=32, num_uniform=16)
        a = sampled_softmax_cross_entropy(h, W, y, generator=torch.Generator().manual_seed(1), **kw)
        b = sampled_softmax_cross_entropy(
            hT, W_view, y, generator=torch.Generator().manual_seed(1), **kw
        )
        torch.testing.assert_close(a, b)


# ---- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case,match",
    [
        (lambda h, W, y: (h[0], W, y), "hidden must be 2-D"),
        (lambda h, W, y: (h[:, :3], W, y), "disagree on d"),
        (lambda h, W, y: (h, W, y.float()), "target must be an integer"),
        (lambda h, W, y: (h, W, y[:-1]), "target must be 1-D of length"),
        (lambda h, W, y: (h, W, torch.full_like(y, 300)), r"target values must be in \[0, n=300\)"),
        (lambda h, W, y: (h, W, torch.full_like(y, -2)), "found -2"),
        (lambda h, W, y: (h.int(), W, y), "hidden must be float"),
        (lambda h, W, y: (h, W[:0], y), "at least one class"),
    ],
)
def test_bad_input_raises_value_error(case, match):
    h, W, y = _data()
    with pytest.raises(ValueError, match=match):
        sampled_softmax_cross_entropy(*case(h, W, y))


def test_bad_options_raise():
    h, W, y = _data()
    with pytest.raises(ValueError, match="reduction"):
        sampled_softmax_cross_entropy(h, W, y, reduction="avg")
    with pytest.raises(ValueError, match="method"):
        sampled_softmax_cross_entropy(h, W, y, method="exact")
    with pytest.raises(ValueError, match="num_uniform"):
        sampled_softmax_cross_entropy(h, W, y, num_uniform=-1)
    with pytest.raises(ValueError, match="num_candidates"):
        sampled_softmax_cross_entropy(h, W, y, num_candidates=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        sampled_softmax_cross_entropy(
            h, W, y, method="lsh", label_smoothing=0.1, num_candidates=8, num_uniform=8
        )
    with pytest.raises(ValueError, match="lsh_bits"):
        SampledSoftmaxLoss(100, 8, lsh_bits=40)
    with pytest.raises(ValueError, match="refresh_every"):
        SampledSoftmaxLoss(100, 8, refresh_every=0)


def test_validate_option_reports_non_finite():
    h, W, y = _data()
    h[2, 1] = float("nan")
    with pytest.raises(ValueError, match="hidden contains NaN or inf"):
        sampled_softmax_cross_entropy(h, W, y, validate=True)
    # without validate, NaN propagates as in torch
    assert math.isnan(sampled_softmax_cross_entropy(h, W, y, method="full").item())


def test_devices_must_match():
    if not torch.cuda.is_available():
        h, W, y = _data()
        with pytest.raises(ValueError, match="one device"):
            sampled_softmax_cross_entropy(h, W, y.to("meta"))
        return
    h, W, y = _data()
    with pytest.raises(ValueError, match="one device"):
        sampled_softmax_cross_entropy(h.cuda(), W, y)


# ---- module: sparse gradients, refresh, state, topk -----------------------------------------
@pytest.mark.parametrize("method", ["lsh", "faiss"])
@pytest.mark.parametrize("opt", ["sgd", "sparse_adam"])
def test_sparse_step_changes_only_candidate_rows(method, opt):
    torch.manual_seed(0)
    n, d, N = 5000, 16, 8
    layer = SampledSoftmaxLoss(
        n, d, method=method, num_candidates=32, num_uniform=16, sparse_grad=True, seed=1
    )
    before = layer.weight.detach().clone()
    optim = (
        torch.optim.SGD(layer.parameters(), lr=0.5)
        if opt == "sgd"
        else torch.optim.SparseAdam(list(layer.parameters()), lr=0.1)
    )
    h, y = torch.randn(N, d), torch.randint(0, n, (N,))
    loss = layer(h, y)
    loss.backward()
    grad = layer.weight.grad
    assert grad.is_sparse
    touched = grad.coalesce().indices()[0].unique()
    # each row's S, plus the T the default scheme shares by the batch
    assert layer.sampling_options.scheme == "shared_samples"
    bound = N * 32 + layer.num_uniform
    assert touched.numel() <= bound and set(y.tolist()) <= set(touched.tolist())
    optim.step()
    changed = (layer.weight.detach() != before).any(dim=1).nonzero().flatten()
    assert set(changed.tolist()) <= set(touched.tolist())
    assert changed.numel() > 0


def test_refresh_schedule_and_stats():
    layer = SampledSoftmaxLoss(
        3000,
        8,
        method="lsh",
        search_min_mass=None,
        num_candidates=16,
        num_uniform=8,
        refresh_every=3,
    )
    h, y = torch.randn(4, 8), torch.randint(0, 3000, (4,))
    for _ in range(7):
        layer(h, y).backward()
    s = layer.stats()
    assert s["steps"] == 7 and s["refresh_count"] == 3  # at steps 0, 3, 6
    assert s["last_refresh_seconds"] > 0 and s["index"] == "lsh"
    with torch.no_grad():  # inference does not advance the schedule
        layer(h, y)
    assert layer.stats()["steps"] == 7


def test_state_dict_round_trip_rebuilds_identical_index():
    torch.manual_seed(0)
    a = SampledSoftmaxLoss(
        2000, 8, method="lsh", num_candidates=32, num_uniform=8, seed=5, refresh_every=4
    )
    h, y = torch.randn(6, 8), torch.randint(0, 2000, (6,))
    for _ in range(5):
        a(h, y).backward()
    a.refresh()
    b = SampledSoftmaxLoss(2000, 8, method="lsh", num_candidates=32, num_uniform=8, seed=0)
    b.load_state_dict(a.state_dict())
    assert b.steps == 5 and b.seed == 5 and b.index is None
    torch.testing.assert_close(b(h, y), a(h, y))  # same weights, seed, step -> same loss
    assert torch.equal(a.index.search(h, 31), b.index.search(h, 31))


def test_weight_tying_with_embedding():
    emb = torch.nn.Embedding(1000, 8)
    layer = SampledSoftmaxLoss(weight=emb.weight, method="lsh", num_candidates=16, num_uniform=8)
    assert layer.weight is emb.weight
    tokens = torch.randint(0, 1000, (5,))
    layer(emb(tokens), torch.randint(0, 1000, (5,))).backward()
    assert emb.weight.grad is not None


def test_gradient_accumulation_over_calls():
    h, W, y = _data(n=200, dtype=torch.float64)
    W.requires_grad_(True)
    for part in (slice(0, 16), slice(16, 32)):
        sampled_softmax_cross_entropy(
            h[part], W, y[part], method="full", reduction="sum"
        ).backward()
    ref = torch.autograd.grad(F.cross_entropy(h @ W.T, y, reduction="sum"), W)[0]
    torch.testing.assert_close(W.grad, ref)


@pytest.mark.parametrize("method", ["lsh", "faiss"])
def test_topk_reranks_exactly_and_reports_recall(method):
    g = torch.Generator().manual_seed(0)
    n, d = 3000, 16
    layer = SampledSoftmaxLoss(
        n, d, method=method, num_candidates=256, num_uniform=0, lsh_tables=16
    )
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n, d, generator=g))
    h = layer.weight.detach()[:50] + 0.1 * torch.randn(50, d, generator=g)
    s, ids = layer.topk(h, 5)
    es, eids = layer.topk(h, 5, exact=True)
    assert ids.shape == (50, 5) and eids.shape == (50, 5)
    valid = ids >= 0
    exact_scores = (h.unsqueeze(1) * layer.weight.detach()[ids.clamp_min(0)]).sum(-1)
    torch.testing.assert_close(s[valid], exact_scores[valid])  # scores are exact
    assert (s[:, :-1] >= s[:, 1:]).all()
    rec = ts.recall_at_k(ids, eids)
    assert rec >= (0.99 if method == "faiss" else 0.3), rec


# ---- training ---------------------------------------------------------------------------------
def _teacher(n=1000, d=32, N=6000, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n, d, generator=g)
    y = torch.randint(0, n, (N,), generator=g)
    x = centers[y] + 0.3 * torch.randn(N, d, generator=g)
    return x, y


@pytest.mark.parametrize("method", METHODS)
def test_small_training_run_reaches_accuracy(method):
    """Linear classifier on a 1000-class teacher problem: 3 epochs, exact evaluation."""
    torch.manual_seed(0)
    x, y = _teacher()
    layer = SampledSoftmaxLoss(
        1000,
        32,
        method=method,
        num_candidates=64,
        num_uniform=64,
        sparse_grad=method != "full",
        refresh_every=20,
        seed=0,
    )
    opt = torch.optim.SGD(layer.parameters(), lr=8.0)
    for _ in range(3):
        for i in range(0, len(y), 128):
            opt.zero_grad()
            layer(x[i : i + 128], y[i : i + 128]).backward()
            opt.step()
    _, pred = layer.topk(x, 1, exact=True)
    acc = (pred[:, 0] == y).float().mean().item()
    assert acc >= 0.9, f"{method}: accuracy {acc:.3f}"


def test_sparse_grad_on_the_full_path_keeps_sparse_optimizers_working():
    """method="auto" may pick the exact path: sparse_grad=True then still gives a sparse
    gradient (of every row), so SparseAdam keeps working whatever the dispatcher chose."""
    layer = SampledSoftmaxLoss(200, 8, method="full", sparse_grad=True)
    opt = torch.optim.SparseAdam(list(layer.parameters()), lr=0.1)
    h, y = torch.randn(4, 8), torch.randint(0, 200, (4,))
    layer(h, y).backward()
    assert layer.weight.grad.is_sparse
    dense = torch.autograd.grad(F.cross_entropy(h @ layer.weight.T, y), layer.weight)[0]
    torch.testing.assert_close(layer.weight.grad.to_dense(), dense)
    opt.step()
