"""The estimator (autograd Function over the PyTorch twins) against exact references."""

import pytest
import torch
import torch.nn.functional as F
from oracles import all_classes_candidates, sampled_softmax_loss_ref

from triton_softmax import sampled_softmax_from_candidates
from triton_softmax.autograd import SampledSoftmaxFunction
from triton_softmax.candidates import build_candidates


def _problem(N=9, n=37, d=11, bias=True, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=g, dtype=dtype)
    W = torch.randn(n, d, generator=g, dtype=dtype) * 0.5
    b = torch.randn(n, generator=g, dtype=dtype) if bias else None
    y = torch.randint(0, n, (N,), generator=g)
    return h, W, b, y


@pytest.mark.parametrize("bias", [False, True])
def test_all_classes_gives_exact_loss_and_gradient(bias):
    h, W, b, y = _problem(bias=bias)
    params = [h, W] + ([b] if bias else [])
    for p in params:
        p.requires_grad_(True)
    ids, logw = all_classes_candidates(h.shape[0], W.shape[0], y)
    loss = SampledSoftmaxFunction.apply(h, W, b, ids, logw, y, False, False, 0.0, 0.0).sum()
    grads = torch.autograd.grad(loss, params)
    logits = h @ W.T + (b if bias else 0)
    ref = F.cross_entropy(logits, y, reduction="sum")
    ref_grads = torch.autograd.grad(ref, params)
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-10)
    for g_, r_ in zip(grads, ref_grads):
        torch.testing.assert_close(g_, r_, rtol=1e-10, atol=1e-10)


def test_retrieval_covering_all_classes_is_exact():
    """S from 'retrieval' = every class (in shuffled order, with duplicates): T gets weight 0."""
    h, W, b, y = _problem(N=5, n=23)
    retrieved = torch.cat(
        [torch.randperm(23).expand(5, 23), torch.zeros(5, 4, dtype=torch.long)], 1
    )
    loss = sampled_softmax_from_candidates(h, W, y, retrieved, b, num_uniform=7, reduction="sum")
    ref = F.cross_entropy(h @ W.T + b, y, reduction="sum")
    torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-6)


def test_gradcheck_against_autograd_formula():
    h, W, b, y = _problem(N=4, n=13, d=5)
    retrieved = torch.randint(-1, 13, (4, 5), generator=torch.Generator().manual_seed(3))
    ids, logw = build_candidates(retrieved, y, 13, 4, torch.Generator().manual_seed(4))
    h.requires_grad_(True)
    W.requires_grad_(True)
    b.requires_grad_(True)

    def fn(h, W, b):
        return SampledSoftmaxFunction.apply(h, W, b, ids, logw.double(), y, False, False, 0.0, 0.0)

    assert torch.autograd.gradcheck(fn, (h, W, b), eps=1e-6, atol=1e-7)
    out = fn(h, W, b)
    ref = sampled_softmax_loss_ref(h, W, b, ids, logw.double(), y)
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    g1 = torch.autograd.grad(out.sum(), (h, W, b))
    g2 = torch.autograd.grad(ref.sum(), (h, W, b))
    for a, r in zip(g1, g2):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("bias", [False, True])
def test_sparse_gradient_equals_dense(bias):
    h, W, b, y = _problem(N=6, n=40, d=7, bias=bias)
    retrieved = torch.randint(-1, 40, (6, 8), generator=torch.Generator().manual_seed(5))
    ids, logw = build_candidates(retrieved, y, 40, 5, torch.Generator().manual_seed(6))
    grads = []
    for sparse in (False, True):
        W_ = W.clone().requires_grad_(True)
        b_ = b.clone().requires_grad_(True) if bias else None
        SampledSoftmaxFunction.apply(
            h, W_, b_, ids, logw, y, sparse, False, 0.0, 0.0
        ).sum().backward()
        assert W_.grad.is_sparse == sparse
        grads.append((W_.grad.to_dense(), b_.grad.to_dense() if bias else None))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    if bias:
        torch.testing.assert_close(grads[0][1], grads[1][1])
    touched = torch.zeros(40, dtype=torch.bool)
    touched[ids[torch.isfinite(logw)]] = True
    assert (grads[1][0][~touched] == 0).all()


def test_error_shrinks_as_candidates_grow():
    """|loss_hat - loss| (mean over draws) falls as |S| grows and as |T| grows."""
    g = torch.Generator().manual_seed(0)
    N, n, d = 64, 2000, 16
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    h = torch.randn(N, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, n, (N,), generator=g)
    exact = F.cross_entropy(h @ W.T, y, reduction="none")
    order = torch.argsort(h @ W.T, dim=1, descending=True)  # exact top classes as "retrieval"

    def err(S, T, draws=8):
        errs = []
        for k in range(draws):
            gen = torch.Generator().manual_seed(100 + k)
            est = sampled_softmax_from_candidates(
                h, W, y, order[:, : S - 1], num_uniform=T, reduction="none", generator=gen
            )
            errs.append((est.double() - exact).abs().mean())
        return float(torch.stack(errs).mean())

    by_s = [err(S, 64) for S in (8, 64, 512)]
    by_t = [err(32, T) for T in (4, 64, 1024)]
    assert by_s[0] > by_s[1] > by_s[2]
    assert by_t[0] > by_t[1] > by_t[2]
    assert err(n, 1) < 1e-6  # S = everything: exact
