"""optim.FusedSparseAdam against torch.optim.SparseAdam (its oracle), the sparse_adam kernel
under the interpreter against its twin, and the coalesced sparse weight gradient of the loss.
"""

import pytest
import torch
from conftest import TOL

from triton_softmax import SampledSoftmaxLoss
from triton_softmax.kernels.sparse_adam import sparse_adam_update
from triton_softmax.optim import FusedSparseAdam
from triton_softmax.reference.sampled_logits import sparse_grad_weight_ref
from triton_softmax.reference.sparse_adam import sparse_adam_update_ref


def sparse_rows(n, d, rows, seed, coalesce=True):
    g = torch.Generator().manual_seed(seed)
    idx = torch.tensor(rows, dtype=torch.int64)
    shape = (n, d) if d else (n,)
    vals = torch.randn((len(rows), d) if d else (len(rows),), generator=g)
    t = torch.sparse_coo_tensor(idx.unsqueeze(0), vals, shape)
    return t.coalesce() if coalesce else t


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("d", [0, 7])
def test_fused_sparse_adam_is_sparse_adam_bitwise(d, coalesce, maximize):
    """Same rows, same bits as SparseAdam over several steps (duplicates, repeats, a gap)."""
    n = 13
    g = torch.Generator().manual_seed(1)
    p0 = torch.randn((n, d) if d else (n,), generator=g)
    ours = torch.nn.Parameter(p0.clone())
    ref = torch.nn.Parameter(p0.clone())
    kw = dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, maximize=maximize)
    opt_ours, opt_ref = FusedSparseAdam([ours], **kw), torch.optim.SparseAdam([ref], **kw)
    steps = [[0, 3, 3, 12], [5], [3, 0, 7, 7, 7, 1], [], [12, 2]]
    for k, rows in enumerate(steps):
        grad = sparse_rows(n, d, rows, seed=k, coalesce=coalesce)
        ours.grad, ref.grad = grad.clone(), grad.clone()
        opt_ours.step()
        opt_ref.step()
        assert torch.equal(ours.detach(), ref.detach()), f"step {k}"
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_ours.state[ours][key], opt_ref.state[ref][key])
        assert opt_ours.state[ours]["step"] == opt_ref.state[ref]["step"] == k + 1
    assert not torch.equal(ours.detach(), p0)  # it moved


def test_fused_sparse_adam_rejects_dense_and_bad_options():
    p = torch.nn.Parameter(torch.zeros(3, 2))
    p.grad = torch.ones(3, 2)
    with pytest.raises(RuntimeError, match="dense"):
        FusedSparseAdam([p]).step()
    with pytest.raises(ValueError, match="learning rate"):
        FusedSparseAdam([p], lr=-1.0)
    with pytest.raises(ValueError, match="beta"):
        FusedSparseAdam([p], betas=(1.0, 0.9))


def _state(n, D, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, D, generator=g).to(dtype)
    m = (0.1 * torch.randn(n, D, generator=g)).to(dtype)
    v = torch.rand(n, D, generator=g).to(dtype)
    return p, m, v


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,D,rows", [(1, 1, [0]), (11, 37, [9, 0, 4, 10]), (40, 130, [3])])
def test_sparse_adam_kernel_matches_twin(n, D, rows, dtype):
    """Interpreter kernel vs twin (fp64 twin as the reference); rows not in `rows` are NaN
    before and must stay NaN (nothing written there), touched rows must be finite."""
    p, m, v = _state(n, D, dtype, seed=n + D)
    rows_t = torch.tensor(rows, dtype=torch.int64)
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[rows_t] = False
    for t in (p, m, v):
        t[untouched] = float("nan")
    vals = torch.randn(len(rows), D, generator=torch.Generator().manual_seed(3)).to(dtype)
    want = [t.double() for t in (p, m, v)]
    sparse_adam_update_ref(*want, rows_t, vals.double(), 0.01, 0.9, 0.999, 1e-8)
    got = [t.clone() for t in (p, m, v)]
    sparse_adam_update(*got, rows_t, vals, 0.01, 0.9, 0.999, 1e-8)
    for g_t, w_t in zip(got, want):
        assert torch.isnan(g_t[untouched]).all()
        assert torch.isfinite(g_t[rows_t]).all()
        torch.testing.assert_close(g_t[rows_t].double(), w_t[rows_t], **TOL[dtype])


def test_sparse_adam_kernel_validates():
    p, m, v = _state(5, 4, torch.float32, 0)
    with pytest.raises(ValueError, match="values"):
        sparse_adam_update(p, m, v, torch.tensor([1]), torch.zeros(2, 4), 0.1, 0.9, 0.99, 1e-8)
    with pytest.raises(ValueError, match="exp_avg"):
        sparse_adam_update(p, m[:3], v, torch.tensor([1]), torch.zeros(1, 4), 0.1, 0.9, 0.99, 1e-8)


def test_sparse_grad_weight_is_coalesced_and_exact():
    """Unique sorted rows, duplicates summed, zero-coefficient slots absent, extra rows added."""
    g = torch.Generator().manual_seed(0)
    N, M, n, d = 5, 6, 9, 3
    coef = torch.randn(N, M, generator=g, dtype=torch.float64)
    ids = torch.randint(0, n, (N, M), generator=g)
    ids[:, 0] = 4
    coef[:, 5] = 0.0
    ids[:, 5] = 8  # only zero coefficients: must not appear
    ids[ids == 8] = 7
    ids[:, 5] = 8
    h = torch.randn(N, d, generator=g, dtype=torch.float64)
    extra_ids = torch.tensor([4, 0, 0])
    extra_rows = torch.randn(3, d, generator=g, dtype=torch.float64)
    out = sparse_grad_weight_ref(coef, ids, h, n, torch.float64, extra_ids, extra_rows)
    assert out.is_coalesced()
    rows = out._indices()[0]
    assert torch.equal(rows, rows.unique())
    assert 8 not in rows.tolist()
    dense = torch.zeros(n, d, dtype=torch.float64)
    dense.index_add_(0, ids.reshape(-1), (coef.unsqueeze(2) * h.unsqueeze(1)).reshape(-1, d))
    dense.index_add_(0, extra_ids, extra_rows)
    torch.testing.assert_close(out.to_dense(), dense, atol=1e-12, rtol=1e-12)
    empty = sparse_grad_weight_ref(torch.zeros(N, M), ids, h.float(), n, torch.float32)
    assert empty._nnz() == 0 and empty.is_coalesced()


@pytest.mark.parametrize("scheme", ["per_example", "shared_samples"])
def test_loss_sparse_gradient_is_coalesced_and_equals_dense(scheme):
    torch.manual_seed(0)
    n, d, N = 300, 16, 12
    kw = dict(method="lsh", num_candidates=16, num_uniform=24, candidate_scheme=scheme, seed=3)
    sparse = SampledSoftmaxLoss(n, d, sparse_grad=True, **kw)
    dense = SampledSoftmaxLoss(n, d, sparse_grad=False, bucket_impl="gather", **kw)
    dense.load_state_dict(sparse.state_dict())
    h = torch.randn(N, d)
    y = torch.randint(0, n, (N,))
    sparse(h, y).backward()
    dense(h, y).backward()
    grad = sparse.weight.grad
    assert grad.is_sparse and grad.is_coalesced()
    rows = grad._indices()[0]
    assert torch.equal(rows, rows.unique())
    torch.testing.assert_close(grad.to_dense(), dense.weight.grad, **TOL[torch.float32])
    opt = FusedSparseAdam(sparse.parameters(), lr=0.01)
    before = sparse.weight.detach().clone()
    opt.step()
    changed = (sparse.weight.detach() != before).any(1).nonzero().flatten()
    assert set(changed.tolist()) <= set(rows.tolist()) and changed.numel() > 0


def test_fused_sparse_adam_bitwise_across_row_blocks():
    """Wide rows: the twin's blocks hold 3 rows here, so 8 rows cross two block edges."""
    n, d = 10, 90_000
    p0 = torch.randn(n, d, generator=torch.Generator().manual_seed(5))
    ours, ref = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    opt_ours, opt_ref = FusedSparseAdam([ours], lr=0.1), torch.optim.SparseAdam([ref], lr=0.1)
    for k in range(2):
        grad = sparse_rows(n, d, [9, 0, 1, 2, 3, 5, 6, 8], seed=k)
        ours.grad, ref.grad = grad.clone(), grad.clone()
        opt_ours.step()
        opt_ref.step()
    assert torch.equal(ours.detach(), ref.detach())
