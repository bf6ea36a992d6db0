"""kernels/bucket_tiles.py: the bucket-tile log-sum-exp and its backward against float64 twins.

Codes are drawn directly (not hashed) so that the bucket shapes are chosen: K = 1 gives
buckets of many queries and classes (several BLOCK_M x BLOCK_N tiles each under the
interpreter's 16 x 16 config), K = 4 with few classes leaves buckets empty and queries with
nothing to score (lse = -inf). The twin runs on float64 copies of the values the kernel
reads, so the tolerance is the fp32-accumulation one for every input dtype.
"""

import pytest
import torch
from conftest import TOL

from triton_softmax import ops
from triton_softmax.bucket_tiles import bucket_tile_lse_bwd_ref, bucket_tile_lse_ref
from triton_softmax.kernels.bucket_tiles import bucket_tile_lse, bucket_tile_lse_bwd
from triton_softmax.lsh import bucket_table_ref

ACC_TOL = TOL[torch.float32]


pytestmark = pytest.mark.usefixtures("poison_kernel_outputs")


def problem(N, n, d, K, L, dtype, bias, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(N, d, generator=g) * 0.5).to(dtype)
    W = (torch.randn(n, d, generator=g) * 0.5).to(dtype)
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    y = torch.randint(0, n, (N,), generator=g)
    qc = torch.randint(0, 2**K, (N, L), generator=g, dtype=torch.int32)
    kc = torch.randint(0, 2**K, (n, L), generator=g, dtype=torch.int32)
    kc[y[: N // 2]] = qc[: N // 2]  # half the targets share every bucket with their query
    ids, off = bucket_table_ref(kc, K)
    out = [h, W, b, y, qc, kc, ids, off]
    return [t.to(device) if t is not None else None for t in out]


def as64(t):
    return None if t is None else (t.double() if t.is_floating_point() else t)


def close(a, b):
    torch.testing.assert_close(a.double(), b.double(), **ACC_TOL, equal_nan=False)


CASES = [  # (N, n, d, K, L): multi-tile buckets, odd d, sparse buckets, one query, one table
    (50, 70, 20, 1, 3),
    (37, 40, 33, 4, 2),
    (1, 30, 8, 2, 4),
    (24, 90, 16, 2, 1),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_forward_matches_twin(case, dtype, bias, device):
    N, n, d, K, L = case
    h, W, b, y, qc, kc, ids, off = problem(N, n, d, K, L, dtype, bias, seed=N + d, device=device)
    got = bucket_tile_lse(h, W, b, y, qc, kc, ids, off)
    ref = bucket_tile_lse_ref(as64(h), as64(W), as64(b), y, qc, kc, ids, off)
    assert got.shape == (L, N) and got.dtype == torch.float32
    finite = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(got), finite)  # the same entries are empty (-inf)
    assert bool((got[~finite] == float("-inf")).all())
    close(got[finite], ref[finite])
    if case[3] == 4:
        assert not bool(finite.all())  # this case must exercise empty tiles


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_backward_matches_twin(case, dtype, bias, device):
    N, n, d, K, L = case
    h, W, b, y, qc, kc, ids, off = problem(N, n, d, K, L, dtype, bias, seed=3 * N, device=device)
    lse = bucket_tile_lse_ref(as64(h), as64(W), as64(b), y, qc, kc, ids, off)
    g = torch.randn(L, N, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = g.to(device)
    g[:, ::3] = 0.0  # rows with no upstream gradient (ignored rows)
    got = bucket_tile_lse_bwd(g.float(), lse.float(), h, W, b, y, qc, kc, ids, off)
    ref = bucket_tile_lse_bwd_ref(g, lse, as64(h), as64(W), as64(b), y, qc, kc, ids, off)
    for a, r in zip(got, ref):
        if r is None:
            assert a is None
            continue
        assert a.dtype == torch.float32
        close(a, r)
    assert bool((got[0][::3] == 0).all())  # rows with g = 0 get exactly nothing


def test_twin_backward_is_the_gradient_of_the_twin_forward():
    """The explicit backward twin = autograd through the forward twin (float64)."""
    h, W, b, y, qc, kc, ids, off = problem(30, 50, 12, 2, 3, torch.float64, True, seed=7)
    params = [t.clone().requires_grad_(True) for t in (h, W, b)]
    lse = bucket_tile_lse_ref(*params, y, qc, kc, ids, off)
    g = torch.randn_like(lse).masked_fill(~torch.isfinite(lse), 0.0)
    auto = torch.autograd.grad((g * lse.masked_fill(~torch.isfinite(lse), 0.0)).sum(), params)
    dh, dw, db = bucket_tile_lse_bwd_ref(g, lse.detach(), h, W, b, y, qc, kc, ids, off)
    for a, r in zip((dh, dw, db), auto):
        torch.testing.assert_close(a, r, **TOL[torch.float64])


def test_non_contiguous_inputs(device):
    h, W, b, y, qc, kc, ids, off = problem(20, 40, 24, 2, 2, torch.float32, True, 2, device)
    h_nc = torch.stack([h, h], 2)[:, :, 0]
    assert not h_nc.is_contiguous()
    W_nc = W.T.contiguous().T
    close(
        bucket_tile_lse(h_nc, W_nc, b, y, qc, kc, ids, off),
        bucket_tile_lse(h, W, b, y, qc, kc, ids, off),
    )


def test_bad_shapes_raise():
    h, W, b, y, qc, kc, ids, off = problem(10, 20, 8, 2, 2, torch.float32, False, 0)
    with pytest.raises(ValueError, match="codes"):
        bucket_tile_lse(h, W, b, y, qc[:, :1], kc, ids, off)
    with pytest.raises(ValueError, match="sorted_ids"):
        bucket_tile_lse(h, W, b, y, qc, kc, ids[:1], off)
    with pytest.raises(ValueError, match="target"):
        bucket_tile_lse(h, W, b, y[:3], qc, kc, ids, off)


def test_float64_is_rejected_by_the_launchers_and_routed_to_the_twin(monkeypatch):
    h, W, b, y, qc, kc, ids, off = problem(12, 30, 8, 2, 3, torch.float64, True, seed=4)
    with pytest.raises(TypeError, match="float64"):
        bucket_tile_lse(h, W, b, y, qc, kc, ids, off)
    g = torch.ones(3, 12, dtype=torch.float64)  # (L, N)
    with pytest.raises(TypeError, match="float64"):
        bucket_tile_lse_bwd(g, g, h, W, b, y, qc, kc, ids, off)
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")
    lse = ops.bucket_tile_lse(h, W, b, y, qc, kc, ids, off)
    assert torch.equal(lse, bucket_tile_lse_ref(h, W, b, y, qc, kc, ids, off))
    g = g.masked_fill(~torch.isfinite(lse), 0.0)
    got = ops.bucket_tile_lse_bwd(g, lse, h, W, b, y, qc, kc, ids, off)
    for a, r in zip(got, bucket_tile_lse_bwd_ref(g, lse, h, W, b, y, qc, kc, ids, off)):
        assert torch.equal(a, r)
