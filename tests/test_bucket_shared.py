"""bucket_shared.py: the bucket-shared scheme, tiles against gathers, module options."""

import math

import pytest
import torch
from helpers_schemes import _teacher_accuracy

from triton_softmax import SampledSoftmaxLoss


@pytest.mark.parametrize("bias", [False, True])
def test_bucket_tiles_equal_the_per_example_estimator_on_the_bucket_union(bias):
    """The tiled computation = the plain estimator on S_i = union of the query's buckets
    (target once, weight 1) + the same shared T with weight n/|T|, hits removed (float64)."""
    from oracles import sampled_softmax_loss_ref

    from triton_softmax.bucket_tiles import bucket_tile_loss
    from triton_softmax.lsh import LSHIndex

    g = torch.Generator().manual_seed(0)
    N, n, d, T = 9, 120, 6, 11
    h = torch.randn(N, d, generator=g, dtype=torch.float64)
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
    y = torch.randint(0, n, (N,), generator=g)
    index = LSHIndex(d, 3, 4, seed=1).build(W, b)
    params = [t.clone().requires_grad_(True) for t in (h, W) + ((b,) if bias else ())]
    out = bucket_tile_loss(
        params[0],
        params[1],
        params[2] if bias else None,
        y,
        index,
        T,
        torch.Generator().manual_seed(5),
    )
    # brute force: explicit candidate lists
    q = index.query_codes(h)
    k = index.codes
    t = torch.randint(0, n, (T,), generator=torch.Generator().manual_seed(5))
    ids, logw = [], []
    for i in range(N):
        S = [j for j in range(n) if bool((k[j] == q[i]).any()) and j != int(y[i])]
        row = S + [int(y[i])] + t.tolist()
        lw = [0.0] * (len(S) + 1) + [
            float("-inf") if (bool((k[tt] == q[i]).any()) or tt == int(y[i])) else math.log(n / T)
            for tt in t.tolist()
        ]
        ids.append(row)
        logw.append(lw)
    M = max(len(r) for r in ids)
    ids_t = torch.tensor([r + [0] * (M - len(r)) for r in ids])
    logw_t = torch.tensor([r + [float("-inf")] * (M - len(r)) for r in logw], dtype=torch.float64)
    ref = sampled_softmax_loss_ref(
        params[0], params[1], params[2] if bias else None, ids_t, logw_t, y
    )
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, r in zip(torch.autograd.grad(out.sum(), params), torch.autograd.grad(ref.sum(), params)):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sparse", [True, False])  # gathered union / dense bucket tiles
def test_bucket_shared_module_trains_and_validates(sparse):
    torch.manual_seed(0)
    n, d = 500, 16
    layer = SampledSoftmaxLoss(
        n,
        d,
        method="lsh",
        num_candidates=16,
        num_uniform=32,
        lsh_bits=10,
        lsh_tables=4,
        candidate_scheme="bucket_shared",
        sparse_grad=sparse,
        refresh_every=10,
    )
    assert layer._use_bucket_tiles(torch.zeros(1, d)) == (not sparse)
    assert layer.choice(64).method == "lsh"
    acc = _teacher_accuracy(layer)
    assert acc > 0.9, acc
    with pytest.raises(ValueError, match="bucket_shared"):
        SampledSoftmaxLoss(n, d, method="faiss", candidate_scheme="bucket_shared")
    with pytest.raises(ValueError, match="bucket_shared"):
        SampledSoftmaxLoss(n, d, method="lsh", candidate_scheme="bucket_shared", softcap=2.0)


def test_bucket_shared_module_equals_the_tiled_reference():
    """The module scores the bucket union with the shared-T Function; the tiles of
    bucket_tile_loss compute the same estimator."""
    from triton_softmax.bucket_tiles import bucket_tile_loss

    torch.manual_seed(0)
    layer = SampledSoftmaxLoss(
        300,
        8,
        method="lsh",
        num_candidates=8,
        num_uniform=16,
        lsh_bits=4,
        lsh_tables=3,
        candidate_scheme="bucket_shared",
        sparse_grad=True,
    )
    h, y = torch.randn(20, 8), torch.randint(0, 300, (20,))
    with torch.no_grad():
        got = layer(h, y)
        ref = bucket_tile_loss(
            h, layer.weight, None, y, layer.index, 16, layer._generator(h.device)
        ).mean()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl_env", ["torch", "triton"])
@pytest.mark.parametrize("bias", [False, True])
def test_bucket_tiles_module_equals_gather(impl_env, bias, monkeypatch):
    """bucket_impl='tiles' (twins, or the Triton kernels under the interpreter) gives the loss
    and gradients of bucket_impl='gather' on the same bucket union and shared T, with ignored
    rows and a z-loss."""
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", impl_env)
    torch.manual_seed(0)
    n, d, N = 300, 12, 40
    kw = dict(
        method="lsh",
        num_uniform=16,
        lsh_bits=3,
        lsh_tables=3,
        bias=bias,
        candidate_scheme="bucket_shared",
        z_loss=1e-3,
        refresh_every=10,
    )
    gather = SampledSoftmaxLoss(n, d, bucket_impl="gather", **kw)
    tiles = SampledSoftmaxLoss(n, d, bucket_impl="tiles", **kw)
    tiles.load_state_dict(gather.state_dict())
    if bias:
        with torch.no_grad():
            gather.bias.normal_()
            tiles.bias.copy_(gather.bias)
    h = torch.randn(N, d)
    y = torch.randint(0, n, (N,))
    y[::7] = -100
    for red in ("mean", "sum"):
        gather.reduction = tiles.reduction = red
        hg, ht = h.clone().requires_grad_(True), h.clone().requires_grad_(True)
        lg, lt = gather(hg, y), tiles(ht, y)
        lg.backward()
        lt.backward()
        torch.testing.assert_close(lt, lg, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ht.grad, hg.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(tiles.weight.grad, gather.weight.grad, rtol=1e-4, atol=1e-5)
        if bias:
            torch.testing.assert_close(tiles.bias.grad, gather.bias.grad, rtol=1e-4, atol=1e-5)
        gather.zero_grad()
        tiles.zero_grad()


def test_bucket_impl_validation():
    with pytest.raises(ValueError, match="bucket_impl"):
        SampledSoftmaxLoss(
            100, 8, method="lsh", candidate_scheme="bucket_shared", bucket_impl="dense"
        )
    with pytest.raises(ValueError, match="sparse_grad"):
        SampledSoftmaxLoss(
            100,
            8,
            method="lsh",
            candidate_scheme="bucket_shared",
            bucket_impl="tiles",
            sparse_grad=True,
        )
    layer = SampledSoftmaxLoss(100, 8, method="lsh", candidate_scheme="bucket_shared")
    assert layer._use_bucket_tiles(torch.zeros(2, 8))  # auto: tiles for dense gradients
    layer = SampledSoftmaxLoss(
        100, 8, method="lsh", candidate_scheme="bucket_shared", sparse_grad=True
    )
    assert not layer._use_bucket_tiles(torch.zeros(2, 8))  # sparse: only the gather has it
