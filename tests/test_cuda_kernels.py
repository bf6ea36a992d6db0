"""Every Triton kernel compiled and run on a real GPU, against its twin in float64 on the CPU.

The kernel test files exercise the same kernels under TRITON_INTERPRET=1 with CPU tensors;
this file is their counterpart on CUDA tensors (native bf16/fp16 tl.dot included, which the
interpreter cannot check). Skipped without CUDA.
"""

import pytest
import torch
import torch.nn.functional as F

from triton_softmax import SampledSoftmaxLoss, kernels
from triton_softmax.estimator import (
    sampled_logits_bwd_ref,
    sampled_logits_fwd_ref,
    scatter_grad_weight_ref,
)
from triton_softmax.full import chunked_ce_bwd_ref, chunked_ce_fwd_ref
from triton_softmax.lsh import (
    bucket_table_ref,
    lsh_candidates_ref,
    make_hyperplanes,
    max_row_norm,
    simhash_codes_ref,
)

pytestmark = pytest.mark.cuda
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ACC = dict(atol=2e-4, rtol=2e-4)  # fp32 accumulation of the same rounded inputs
# dh and dW of the tl.dot kernels (linear_ce, bucket_tiles): by design the fp32 dz / p tile is
# rounded to the input dtype for its two tensor-core products, as torch's own bf16 logits
# gradient is; that rounding (unit roundoff 2^-8 bf16, 2^-11 fp16) sets these tolerances.
GRAD_TOL = {
    torch.float32: ACC,
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}


def _inputs(N, n, d, M, dtype, seed=0, scale=0.4):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(N, d, generator=g) * scale).to(dtype)
    W = (torch.randn(n, d, generator=g) * scale).to(dtype)
    b = torch.randn(n, generator=g).to(dtype)
    ids = torch.randint(0, n, (N, M), generator=g)
    logw = torch.log(torch.rand(N, M, generator=g) * 3 + 0.5)
    logw[:, 0] = float("-inf")  # a padding slot
    y = torch.randint(0, n, (N,), generator=g)
    return h, W, b, ids, logw, y


def _cuda(*ts):
    return [t.cuda() if isinstance(t, torch.Tensor) else t for t in ts]


def _d(t):
    return t.double() if t is not None and t.is_floating_point() else t


@pytest.mark.parametrize("dtype", DTYPES)
def test_sampled_logits_fwd_bwd_and_scatter(dtype):
    N, n, d, M = 37, 501, 67, 150  # odd sizes: d not a power of 2, M not a block multiple
    h, W, b, ids, logw, y = _inputs(N, n, d, M, dtype)
    loss, lse = kernels.sampled_logits_fwd(*_cuda(h, W, b, ids, logw, y))
    ref_loss, ref_lse = sampled_logits_fwd_ref(_d(h), _d(W), _d(b), ids, logw, y)
    torch.testing.assert_close(loss.cpu().double(), ref_loss, **ACC)
    g = torch.rand(N, dtype=torch.float64)
    coef, cids, dh = kernels.sampled_logits_bwd(*_cuda(g.float(), h, W, b, ids, logw, y, lse))
    rcoef, rids, rdh = sampled_logits_bwd_ref(g, _d(h), _d(W), _d(b), ids, logw, y, ref_lse)
    torch.testing.assert_close(coef.cpu().double(), rcoef, **ACC)
    assert torch.equal(cids.cpu(), rids)
    torch.testing.assert_close(dh.cpu().double(), rdh, **ACC)
    ref_dW = scatter_grad_weight_ref(rcoef, rids, _d(h), n)
    for det in (False, True):
        dW = kernels.scatter_grad_weight(coef, cids, h.cuda(), n, deterministic=det)
        torch.testing.assert_close(dW.cpu().double(), ref_dW, **ACC)


def test_deterministic_scatter_is_bitwise_repeatable():
    h, W, b, ids, logw, y = _inputs(64, 300, 32, 200, torch.float32, seed=1)
    ids[:, 1:50] = 7  # many writers to one row
    coef = torch.randn(64, 201).cuda()
    ids1 = torch.cat([ids, y[:, None]], 1).cuda()
    a = kernels.scatter_grad_weight(coef, ids1, h.cuda(), 300, deterministic=True)
    c = kernels.scatter_grad_weight(coef, ids1, h.cuda(), 300, deterministic=True)
    assert torch.equal(a, c)


@pytest.mark.parametrize("dtype", DTYPES)
def test_simhash_and_fused_lookup(dtype):
    n, d, N, K, L = 2000, 48, 33, 8, 6
    g = torch.Generator().manual_seed(2)
    W = torch.randn(n, d, generator=g).to(dtype)
    q = torch.randn(N, d, generator=g).to(dtype)
    planes = make_hyperplanes(d, K, L, seed=3)
    M = max_row_norm(W, None)
    codes = kernels.simhash_codes(W.cuda(), planes.cuda(), None, M.cuda()).cpu()
    ref = simhash_codes_ref(W.float(), planes, None, M)
    assert (codes != ref).float().mean() < 1e-3  # bits on a ~0 projection may differ
    sid, off = bucket_table_ref(ref, K)
    ids, coll = kernels.lsh_query(q.cuda(), planes.cuda(), None, sid.cuda(), off.cuda(), 64, 32)
    rids, rcoll = lsh_candidates_ref(simhash_codes_ref(q.float(), planes), sid, off, 64, 32)
    # same collision counts (ties at the cut-off may pick different ids)
    assert torch.equal(ids.cpu().ge(0).sum(1), rids.ge(0).sum(1))
    assert torch.equal(coll.cpu().sort(1).values, rcoll.sort(1).values)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_linear_ce_matches_chunked_twin(dtype, eps):
    N, n, d = 70, 1003, 96
    h, W, b, _, _, y = _inputs(N, n, d, 1, dtype, seed=4)
    loss, lse = kernels.linear_ce_fwd(*_cuda(h, W, b, y), eps)
    ref_loss, ref_lse = chunked_ce_fwd_ref(_d(h), _d(W), _d(b), y, eps)
    torch.testing.assert_close(loss.cpu().double(), ref_loss, **ACC)
    g = torch.rand(N, dtype=torch.float64)
    dh, dW, db = kernels.linear_ce_bwd(*_cuda(g.float(), h, W, b, y, lse), eps)
    rdh, rdW, rdb = chunked_ce_bwd_ref(g, _d(h), _d(W), _d(b), y, ref_lse, eps)
    torch.testing.assert_close(dh.cpu().double(), rdh, **GRAD_TOL[dtype])
    torch.testing.assert_close(dW.cpu().double(), rdW, **GRAD_TOL[dtype])
    torch.testing.assert_close(db.cpu().double(), rdb, **ACC)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bucket_tiles_match_twin(dtype):
    """Dense bucket tiles on tensor cores (native bf16/fp16 tl.dot) vs the float64 twin, with
    buckets larger than one tile: K = 2 over 700 classes and 300 queries."""
    from triton_softmax.bucket_tiles import bucket_tile_lse_bwd_ref, bucket_tile_lse_ref

    N, n, d, K, L = 300, 700, 80, 2, 3
    h, W, b, _, _, y = _inputs(N, n, d, 1, dtype, seed=5)
    g = torch.Generator().manual_seed(6)
    qc = torch.randint(0, 2**K, (N, L), generator=g, dtype=torch.int32)
    kc = torch.randint(0, 2**K, (n, L), generator=g, dtype=torch.int32)
    ids, off = bucket_table_ref(kc, K)
    lse = kernels.bucket_tile_lse(*_cuda(h, W, b, y, qc, kc, ids, off))
    ref = bucket_tile_lse_ref(_d(h), _d(W), _d(b), y, qc, kc, ids, off)
    torch.testing.assert_close(lse.cpu().double(), ref, **ACC)
    gl = torch.rand(L, N, dtype=torch.float64, generator=g)
    got = kernels.bucket_tile_lse_bwd(*_cuda(gl.float(), ref.float(), h, W, b, y, qc, kc, ids, off))
    want = bucket_tile_lse_bwd_ref(gl, ref, _d(h), _d(W), _d(b), y, qc, kc, ids, off)
    for a, r, tol in zip(got, want, (GRAD_TOL[dtype], GRAD_TOL[dtype], ACC)):
        torch.testing.assert_close(a.cpu().double(), r, **tol)


@pytest.mark.parametrize("method", ["full", "lsh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_module_on_cuda_trains_and_full_matches_torch(method, dtype):
    torch.manual_seed(0)
    n, d, N = 4000, 64, 128
    layer = (
        SampledSoftmaxLoss(
            n, d, method=method, num_candidates=64, num_uniform=64, sparse_grad=method != "full"
        )
        .cuda()
        .to(dtype)
    )
    h = torch.randn(N, d, device="cuda", dtype=dtype, requires_grad=True)
    y = torch.randint(0, n, (N,), device="cuda")
    loss = layer(h, y)
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32 and torch.isfinite(h.grad).all()
    if method == "full":
        ref = F.cross_entropy(h.detach().float() @ layer.weight.detach().float().T, y)
        torch.testing.assert_close(loss, ref, atol=2e-3, rtol=2e-3)
    else:
        assert layer.weight.grad.is_sparse
        index = layer.index  # the default generator: cluster lists
        assert all(t.is_cuda for t in (index.centroids, index.route, index.order, index.offsets))


@pytest.mark.xfail(
    reason="H200, triton 3.6 (2026-11-30): fp32, k = 40: one id of 40 came from another key; "
    "ops routes list_topk to the twin on CUDA until this passes",
    strict=False,
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_list_topk_matches_twin(dtype):
    """The cluster lists' fused score + running top-k (tl.sort on the device), with the
    interpreter test's lists: empty ones, a masked class, a NaN row."""
    from tests.test_list_scores import SIZES, problem
    from triton_softmax.kernels.list_scores import list_topk
    from triton_softmax.reference.list_scores import list_topk_ref

    h, w, b, order, offsets, lists = problem(dtype, True)
    for k in (4, 13, 40):
        s, ids = list_topk(*_cuda(h, w, b, order, offsets, lists), k, max(SIZES))
        s_ref, ids_ref = list_topk_ref(_d(h), _d(w), _d(b), order, offsets, lists, k, max(SIZES))
        torch.testing.assert_close(s.cpu().double(), s_ref.double(), **ACC)
        bad = (ids.cpu() != ids_ref).nonzero().tolist()
        assert not bad, (
            f"k={k}: ids differ at {bad[:8]}; kernel {ids.cpu()[bad[0][0], bad[0][1]].tolist()} "
            f"{s.cpu()[bad[0][0], bad[0][1]].tolist()}; twin "
            f"{ids_ref[bad[0][0], bad[0][1]].tolist()} {s_ref[bad[0][0], bad[0][1]].tolist()}"
        )


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_adam_kernel_matches_twin_and_leaves_other_rows(dtype):
    n, D = 300, 130
    g = torch.Generator().manual_seed(7)
    p = torch.randn(n, D, generator=g).to(dtype)
    m = (0.1 * torch.randn(n, D, generator=g)).to(dtype)
    v = torch.rand(n, D, generator=g).to(dtype)
    rows = torch.randperm(n, generator=g)[:77]
    vals = torch.randn(77, D, generator=g).to(dtype)
    want = [t.double() for t in (p, m, v)]
    from triton_softmax.reference.sparse_adam import sparse_adam_update_ref

    sparse_adam_update_ref(*want, rows, vals.double(), 0.01, 0.9, 0.999, 1e-8)
    got = _cuda(p, m, v)
    kernels.sparse_adam_update(*got, rows.cuda(), vals.cuda(), 0.01, 0.9, 0.999, 1e-8)
    tol = {torch.float32: ACC}.get(dtype, dict(atol=1e-2, rtol=1e-2))
    for a, r in zip(got, want):
        torch.testing.assert_close(a.cpu().double(), r, **tol)
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(got[0].cpu()[untouched], p[untouched])


def test_fused_sparse_adam_equals_torch_sparse_adam_on_cuda():
    from triton_softmax import FusedSparseAdam

    n, d = 500, 64
    p0 = torch.randn(n, d, device="cuda")
    ours, ref = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    opt_ours, opt_ref = FusedSparseAdam([ours], lr=0.1), torch.optim.SparseAdam([ref], lr=0.1)
    for _ in range(3):
        rows = torch.randperm(n, device="cuda")[:50].sort().values
        vals = torch.randn(50, d, device="cuda")
        grad = torch.sparse_coo_tensor(rows[None], vals, (n, d)).coalesce()
        ours.grad, ref.grad = grad.clone(), grad.clone()
        opt_ours.step()
        opt_ref.step()
    torch.testing.assert_close(ours.detach(), ref.detach(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_hidden_matches_twin(dtype):
    from triton_softmax.reference.sampled_logits import grad_hidden_ref

    N, n, d, M = 29, 400, 72, 90
    h, W, b, ids, logw, y = _inputs(N, n, d, M, dtype, seed=8)
    coef = torch.randn(N, M, dtype=torch.float64)
    dh = kernels.grad_hidden(coef.float().cuda(), ids.cuda(), W.cuda())
    torch.testing.assert_close(dh.cpu().double(), grad_hidden_ref(coef, ids, _d(W)), **ACC)


@pytest.mark.parametrize(
    "kw",
    [
        dict(method="lsh", lsh_generator="clusters"),
        dict(method="lsh", lsh_generator="tables"),
        dict(method="lsh", candidate_scheme="shared_samples"),
        dict(method="lsh", candidate_scheme="per_example"),  # the default until 2026-12-01
        dict(method="lsh", lsh_generator="tables", candidate_scheme="bucket_shared"),
        dict(method="uniform"),
    ],
    ids=lambda kw: "-".join(str(v) for v in kw.values()),
)
def test_every_sampled_configuration_trains_on_cuda(kw):
    """Optimizer steps of each generator and scheme on CUDA tensors: finite loss,
    finite sparse gradients on the device, and the loss falls over a few steps (fp32)."""
    torch.manual_seed(1)
    n, d, N = 6000, 64, 256
    layer = SampledSoftmaxLoss(n, d, num_candidates=64, num_uniform=64, sparse_grad=True, **kw)
    layer = layer.cuda()
    h = torch.randn(N, d, device="cuda")
    y = torch.randint(0, n, (N,), device="cuda")
    opt = torch.optim.SparseAdam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = layer(h, y)
        loss.backward()
        assert layer.weight.grad.is_sparse and layer.weight.grad.is_cuda
        assert torch.isfinite(layer.weight.grad.coalesce().values()).all()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(map(lambda x: x == x, losses)) and losses[-1] < losses[0]


def test_list_topk_runs_its_twin_on_cuda(monkeypatch):
    """ops.list_topk sends CUDA tensors to the twin (the kernel's fault on the H200, session
    9): a kernel that raises is never called, and the result is the twin's."""
    from tests.test_list_scores import SIZES, problem
    from triton_softmax import ops
    from triton_softmax.reference.list_scores import list_topk_ref

    def refuse(*args, **kwargs):
        raise AssertionError("list_topk kernel called on CUDA")

    monkeypatch.setattr(kernels, "list_topk", refuse)
    h, w, b, order, offsets, lists = problem(torch.float32, True)
    s, ids = ops.list_topk(*_cuda(h, w, b, order, offsets, lists), 40, max(SIZES))
    s_ref, ids_ref = list_topk_ref(h, w, b, order, offsets, lists, 40, max(SIZES))
    torch.testing.assert_close(s.cpu(), s_ref, **ACC)
    assert torch.equal(ids.cpu(), ids_ref)
