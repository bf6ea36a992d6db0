"""ops routes to the Triton launchers under TRITON_SOFTMAX_IMPL=triton, and the whole LSH loss
gives the same loss and gradients through the kernels as through the PyTorch twins."""

import pytest
import torch

import triton_softmax.kernels as kernels
from triton_softmax import ops, sampled_softmax_cross_entropy
from triton_softmax.lsh import LSHIndex, bucket_table_ref, make_hyperplanes


def _small():
    g = torch.Generator().manual_seed(0)
    n, d, N, M = 30, 12, 3, 6
    h, W, b = torch.randn(N, d, generator=g), torch.randn(n, d, generator=g), torch.randn(n)
    ids = torch.randint(0, n, (N, M), generator=g)
    logw = torch.zeros(N, M)
    target = torch.randint(0, n, (N,), generator=g)
    planes = make_hyperplanes(d, 3, 2, seed=0)
    codes = torch.randint(0, 8, (n, 2), generator=g, dtype=torch.int32)
    sorted_ids, offsets = bucket_table_ref(codes, 3)
    lse = torch.zeros(N)
    coef = torch.randn(N, M + 1, generator=g)
    ids1 = torch.cat([ids, target[:, None]], 1)
    return {
        "simhash_codes": (h, planes, 1.0, None),
        "lsh_candidates": (codes[:N], sorted_ids, offsets, 5, 4),
        "lsh_query": (h, planes, None, sorted_ids, offsets, 5, 4),
        "sampled_logits_fwd": (h, W, b, ids, logw, target),
        "sampled_logits_coef": (torch.ones(N), h, W, b, ids, logw, target, lse),
        "sampled_logits_bwd": (torch.ones(N), h, W, b, ids, logw, target, lse),
        "grad_hidden": (coef, ids1, W),
        "scatter_grad_weight": (coef, ids1, h, n),
    }


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("name", list(_small()))
def test_ops_routes_by_impl(monkeypatch, impl, name):
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", impl)
    calls = []
    launcher = getattr(kernels, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return launcher(*args, **kwargs)

    monkeypatch.setattr(kernels, name, spy)
    getattr(ops, name)(*_small()[name])
    assert calls == ([name] if impl == "triton" else [])


KERNELS_OF_A_STEP = [
    "simhash_codes",
    "lsh_query",
    "sampled_logits_fwd",
    "sampled_logits_bwd",
    "scatter_grad_weight",
]


def _loss_and_grads(impl, monkeypatch, bias, deterministic):
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", impl)
    calls = []
    for name in KERNELS_OF_A_STEP:
        launcher = getattr(kernels, name)
        monkeypatch.setattr(
            kernels, name, lambda *a, _f=launcher, _n=name, **k: (calls.append(_n), _f(*a, **k))[1]
        )
    g = torch.Generator().manual_seed(1)
    n, d, N = 100, 24, 6
    h = torch.randn(N, d, generator=g, requires_grad=True)
    W = (torch.randn(n, d, generator=g) * 0.5).requires_grad_()
    b = (torch.randn(n, generator=g) * 0.1).requires_grad_() if bias else None
    target = torch.randint(0, n, (N,), generator=g)
    target[2] = -100  # an ignored row
    # C - 1 = 40 slots hold every id 4 buckets x 8 can return: no ranking ties at a cut-off
    index = LSHIndex(d, num_bits=5, num_tables=4, seed=5, max_per_bucket=8)
    loss = sampled_softmax_cross_entropy(
        h,
        W,
        target,
        b,
        method="lsh",
        index=index,
        num_candidates=41,
        num_uniform=7,
        deterministic=deterministic,
        generator=torch.Generator().manual_seed(9),
    )
    params = [h, W] + ([b] if bias else [])
    grads = torch.autograd.grad(loss, params)
    assert sorted(calls) == (sorted(KERNELS_OF_A_STEP) if impl == "triton" else [])
    return loss.detach(), grads, index


@pytest.mark.parametrize("bias,deterministic", [(False, False), (True, True)])
def test_lsh_loss_and_grads_same_through_kernels_and_twins(monkeypatch, bias, deterministic):
    loss_k, grads_k, index_k = _loss_and_grads("triton", monkeypatch, bias, deterministic)
    loss_t, grads_t, index_t = _loss_and_grads("torch", monkeypatch, bias, deterministic)
    assert torch.equal(index_k.offsets, index_t.offsets)  # same codes, same tables
    torch.testing.assert_close(loss_k, loss_t, atol=1e-5, rtol=1e-5)
    for gk, gt in zip(grads_k, grads_t, strict=True):
        torch.testing.assert_close(gk, gt, atol=1e-5, rtol=1e-5)
