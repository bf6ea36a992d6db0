"""kernels/linear_ce.py against the chunked twin (full.py) and a float64 autograd reference.

On CPU the kernels run under TRITON_INTERPRET=1 with one small config (16 x 32 x 32 blocks),
so the sizes here cross several row, class and d blocks, with partial blocks on every axis.
Forward partials come from _utils.empty, poisoned with NaN here: an unwritten row or class
split shows up as a NaN loss. dW/dh/db are accumulators the kernels zero before they run, so
a class or row they skip shows up as a zero where the reference has a non-zero value.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import TOL

import triton_softmax
from triton_softmax import kernels, ops
from triton_softmax.full import chunked_ce_bwd_ref, chunked_ce_fwd_ref
from triton_softmax.kernels import linear_ce as lce
from triton_softmax.kernels.linear_ce import linear_ce_bwd, linear_ce_fwd

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


pytestmark = pytest.mark.usefixtures("poison_kernel_outputs")


def _inputs(N, n, d, dtype, bias=True, device="cpu", seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    h = (torch.randn(N, d, generator=gen) * scale).to(dtype).to(device)
    W = (torch.randn(n, d, generator=gen) / d**0.5).to(dtype).to(device)
    b = (torch.randn(n, generator=gen) * 0.5).to(dtype).to(device) if bias else None
    y = torch.randint(0, n, (N,), generator=gen).to(device)
    g = torch.rand(N, generator=gen).to(device) + 0.5
    return h, W, b, y, g


def _reference64(h, W, b, y, g, eps):
    """loss (N,), lse (N,), dh, dW, db in float64 by autograd, from the same rounded inputs."""
    h64 = h.double().requires_grad_()
    W64 = W.double().requires_grad_()
    b64 = b.double().requires_grad_() if b is not None else None
    z = h64 @ W64.T + (b64 if b64 is not None else 0.0)
    lse = torch.logsumexp(z, 1)
    n = W.shape[0]
    loss = lse - (1 - eps) * z.gather(1, y[:, None]).squeeze(1) - eps / n * z.sum(1)
    (loss * g.double()).sum().backward()
    db = b64.grad if b64 is not None else None
    return loss.detach(), lse.detach(), h64.grad, W64.grad, db


def _close(actual, expected, dtype, scale=1.0):
    tol = TOL[dtype]
    torch.testing.assert_close(
        actual.double().cpu(), expected.double().cpu(), atol=tol["atol"] * scale, rtol=tol["rtol"]
    )


def _check_all(h, W, b, y, g, eps, dtype, **bwd_kw):
    loss, lse = linear_ce_fwd(h, W, b, y, eps)
    assert loss.dtype == lse.dtype == torch.float32
    dh, dW, db = linear_ce_bwd(g, h, W, b, y, lse, eps, **bwd_kw)
    assert dh.dtype == dW.dtype == torch.float32
    assert dh.shape == h.shape and dW.shape == W.shape
    r_loss, r_lse, r_dh, r_dW, r_db = _reference64(h, W, b, y, g, eps)
    _close(loss, r_loss, dtype)
    _close(lse, r_lse, dtype)
    _close(dh, r_dh, dtype)
    _close(dW, r_dW, dtype)
    if b is None:
        assert db is None
    else:
        _close(db, r_db, dtype)
    # The chunked twin computes in fp32 from the same inputs: the kernels agree with it
    # to fp32 rounding, much tighter than the dtype tolerance.
    t_loss, t_lse = chunked_ce_fwd_ref(h, W, b, y, eps, chunk=64)
    t_dh, t_dW, t_db = chunked_ce_bwd_ref(g, h, W, b, y, t_lse, eps, chunk=64)
    for a, t in [(loss, t_loss), (lse, t_lse), (dh, t_dh), (dW, t_dW)] + (
        [(db, t_db)] if b is not None else []
    ):
        torch.testing.assert_close(a, t, atol=1e-4, rtol=1e-4)
    return loss, lse, dh, dW, db


# ---- forward and backward against float64 and the twin ------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "bias, eps, bwd_kw",
    [
        (True, 0.1, dict(dh_mode="atomic")),
        (False, 0.0, dict(dh_mode="two_pass")),
        (True, 0.0, dict(dh_mode="atomic", row_splits=3)),
    ],
    ids=["bias-smooth-atomic", "nobias-two_pass", "bias-atomic-rowsplit"],
)
def test_fwd_bwd_matches_float64_and_twin(dtype, bias, eps, bwd_kw):
    # n = 203 (6 full class blocks + 11), d = 40 (one full + one partial K block), N = 37.
    h, W, b, y, g = _inputs(37, 203, 40, dtype, bias)
    _check_all(h, W, b, y, g, eps, dtype, **bwd_kw)


@pytest.mark.parametrize(
    "N, n, d",
    [(1, 203, 40), (37, 1, 24), (5, 31, 17), (40, 70, 3), (50, 300, 20)],
    ids=["N=1", "n=1", "n<block", "d=3", "staggered-row-order"],
)
def test_edge_shapes(N, n, d):
    h, W, b, y, g = _inputs(N, n, d, torch.float32, seed=1)
    _check_all(h, W, b, y, g, 0.05, torch.float32)


def test_forward_class_splits_agree():
    h, W, b, y, _ = _inputs(20, 203, 40, torch.float32, seed=2)
    outs = [linear_ce_fwd(h, W, b, y, 0.1, class_splits=s) for s in (1, 2, 7, 100)]
    for loss, lse in outs[1:]:
        torch.testing.assert_close(loss, outs[0][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lse, outs[0][1], atol=1e-5, rtol=1e-5)


def test_empty_batch():
    h, W, b, y, g = _inputs(0, 50, 16, torch.float32)
    loss, lse = linear_ce_fwd(h, W, b, y)
    assert loss.shape == lse.shape == (0,)
    dh, dW, db = linear_ce_bwd(g, h, W, b, y, lse)
    assert dh.shape == (0, 16)
    assert torch.equal(dW, torch.zeros(50, 16)) and torch.equal(db, torch.zeros(50))


def test_strided_and_mixed_dtype_inputs():
    # hidden is a transposed view (stride (1, N)), weight a column slice (stride (2d, 1)),
    # bias a strided slice; hidden bf16 with fp32 weight runs fp32 dots.
    h, W, b, y, g = _inputs(23, 75, 30, torch.float32, seed=3)
    h_t = h.T.contiguous().T
    W_wide = torch.cat([W, torch.randn_like(W)], 1)[:, :30]
    b_s = torch.stack([b, b], 1)[:, 0]
    assert not h_t.is_contiguous() and not W_wide.is_contiguous()
    _check_all(h_t, W_wide, b_s, y, g, 0.0, torch.float32)
    _check_all(h.bfloat16(), W, b, y, g, 0.0, torch.bfloat16)


def test_float64_goes_to_the_twin(monkeypatch):
    """The launchers reject float64; ops routes it to the chunked twin even under
    TRITON_SOFTMAX_IMPL=triton."""
    h, W, b, y, g = _inputs(9, 40, 8, torch.float64)
    with pytest.raises(TypeError, match="float64"):
        linear_ce_fwd(h, W, b, y, 0.1)
    with pytest.raises(TypeError, match="float64"):
        linear_ce_bwd(g, h, W, b, y, torch.zeros(9, dtype=torch.float64), 0.1)
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")
    loss, lse = ops.linear_ce_fwd(h, W, b, y, 0.1)
    assert loss.dtype == torch.float64
    r_loss, r_lse, r_dh, r_dW, r_db = _reference64(h, W, b, y, g, 0.1)
    _close(loss, r_loss, torch.float64)
    dh, dW, db = ops.linear_ce_bwd(g, h, W, b, y, lse, 0.1)
    _close(dW, r_dW, torch.float64)


# ---- ignored rows (grad_loss == 0) -----------------------------------------------------------


@pytest.mark.parametrize("dh_mode", ["atomic", "two_pass"])
def test_zero_grad_rows_get_exactly_zero(dh_mode):
    h, W, b, y, g = _inputs(37, 90, 24, torch.float32, seed=4)
    g[::3] = 0.0
    g[16:32] = 0.0  # one whole 16-row block with no gradient: skipped outright
    h[5] = 1e30  # an ignored row whose logits overflow must not leak inf/NaN
    g[5] = 0.0
    loss, lse = linear_ce_fwd(h, W, b, y)
    dh, dW, db = linear_ce_bwd(g, h, W, b, y, lse, dh_mode=dh_mode)
    assert torch.isfinite(dW).all() and torch.isfinite(db).all()
    assert torch.equal(dh[g == 0], torch.zeros_like(dh[g == 0]))
    keep = g != 0
    _, _, r_dh, r_dW, r_db = _reference64(h[keep], W, b, y[keep], g[keep], 0.0)
    _close(dh[keep], r_dh, torch.float32)
    _close(dW, r_dW, torch.float32)
    _close(db, r_db, torch.float32)


def test_all_rows_ignored():
    h, W, b, y, g = _inputs(20, 50, 16, torch.float32)
    loss, lse = linear_ce_fwd(h, W, b, y)
    dh, dW, db = linear_ce_bwd(torch.zeros_like(g), h, W, b, y, lse)
    assert not dh.any() and not dW.any() and not db.any()


# ---- gradient filtering -----------------------------------------------------------------------


def test_filter_off_or_tiny_is_exact_and_large_skips_everything():
    h, W, b, y, g = _inputs(37, 203, 40, torch.float32, seed=5, scale=3.0)
    loss, lse = linear_ce_fwd(h, W, b, y)
    exact = linear_ce_bwd(g, h, W, b, y, lse)
    tiny = linear_ce_bwd(g, h, W, b, y, lse, filter_eps=1e-30)
    for a, e in zip(tiny, exact):
        torch.testing.assert_close(a, e, atol=0, rtol=0)
    # |dz| <= 1 everywhere, so a threshold above 1 skips every tile.
    dh, dW, db = linear_ce_bwd(g, h, W, b, y, lse, filter_eps=1.5)
    assert not dh.any() and not dW.any() and not db.any()


@pytest.mark.parametrize("dh_mode", ["atomic", "two_pass"])
def test_filter_skips_small_tiles_within_its_bound(dh_mode):
    # Targets in classes [0, 64); classes >= 64 get bias -6, so their probabilities stay
    # below eps = 2^-7 and their tiles (32 classes each here) are skipped. A skipped entry has
    # |dz| < eps, so |dW_j - exact| <= eps sum_i |g_i| |h_i|, |dh_i - exact| <= eps |g_i|
    # sum_j |W_j| and |db_j - exact| <= eps sum_i |g_i|.
    eps = 2.0**-7
    h, W, _, _, g = _inputs(37, 203, 40, torch.float32, seed=6)
    gen = torch.Generator().manual_seed(6)
    y = torch.randint(0, 64, (37,), generator=gen)
    b = torch.where(torch.arange(203) < 64, 0.0, -6.0)
    loss, lse = linear_ce_fwd(h, W, b, y)
    ex_dh, ex_dW, ex_db = linear_ce_bwd(g, h, W, b, y, lse, dh_mode=dh_mode)
    dh, dW, db = linear_ce_bwd(g, h, W, b, y, lse, dh_mode=dh_mode, filter_eps=eps)
    assert ex_dW[64:].abs().min() > 0 and not dW[64:].any() and not db[64:].any()
    torch.testing.assert_close(dW[:64], ex_dW[:64], atol=0, rtol=0)
    slack = 1e-6
    bound_dW = eps * (g.abs()[:, None] * h.abs()).sum(0)[None, :]
    bound_dh = eps * g.abs()[:, None] * W.abs().sum(0)[None, :]
    assert ((dW - ex_dW).abs() <= bound_dW + slack).all()
    assert ((dh - ex_dh).abs() <= bound_dh + slack).all()
    assert ((db - ex_db).abs() <= eps * g.abs().sum() + slack).all()


# ---- determinism, validation, config invariants -----------------------------------------------


def test_two_pass_is_deterministic():
    h, W, b, y, g = _inputs(37, 203, 40, torch.bfloat16, seed=7)
    _, lse = linear_ce_fwd(h, W, b, y)
    a = linear_ce_bwd(g, h, W, b, y, lse, dh_mode="two_pass")
    c = linear_ce_bwd(g, h, W, b, y, lse, dh_mode="two_pass")
    for x, z in zip(a, c):
        assert torch.equal(x, z)


def test_validation():
    h, W, b, y, g = _inputs(4, 10, 8, torch.float32)
    _, lse = linear_ce_fwd(h, W, b, y)
    with pytest.raises(ValueError, match="dh_mode"):
        linear_ce_bwd(g, h, W, b, y, lse, dh_mode="sorted")
    with pytest.raises(ValueError, match="filter_eps"):
        linear_ce_bwd(g, h, W, b, y, lse, filter_eps=0.0)
    with pytest.raises(ValueError, match="agree on d"):
        linear_ce_fwd(h, W[:, :4], b, y)
    with pytest.raises(ValueError, match="bias"):
        linear_ce_fwd(h, W, b[:3], y)
    with pytest.raises(ValueError, match="target"):
        linear_ce_fwd(h, W, b, y.float())
    with pytest.raises(ValueError, match="grad_loss"):
        linear_ce_bwd(g[:2], h, W, b, y, lse)


def test_gpu_configs_align_with_class_splits():
    for rows in (lce._FWD_ROWS, lce._BWD_ROWS):
        for bm, bn, bk, _, _ in rows:
            assert 256 % bn == 0 and min(bm, bn, bk) >= 16


# ---- end to end through the public API --------------------------------------------------------


@pytest.mark.parametrize("bias, eps", [(True, 0.0), (False, 0.1)])
def test_public_full_path_matches_torch(monkeypatch, bias, eps):
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")
    monkeypatch.setenv("TRITON_SOFTMAX_EXACT_KERNEL", "fused")  # the chunked default: its file
    calls = []
    for name in ("linear_ce_fwd", "linear_ce_bwd"):
        fn = getattr(kernels, name)
        monkeypatch.setattr(
            kernels, name, lambda *a, _fn=fn, _n=name, **k: (calls.append(_n), _fn(*a, **k))[1]
        )
    h, W, b, y, _ = _inputs(29, 101, 24, torch.float32, bias, seed=8)
    y[3] = y[17] = -100
    leaves = [t.clone().requires_grad_() for t in (h, W) + ((b,) if bias else ())]
    ours = triton_softmax.sampled_softmax_cross_entropy(
        leaves[0], leaves[1], y, leaves[2] if bias else None, method="full", label_smoothing=eps
    )
    ours.backward()
    ref_leaves = [t.clone().requires_grad_() for t in (h, W) + ((b,) if bias else ())]
    z = ref_leaves[0] @ ref_leaves[1].T + (ref_leaves[2] if bias else 0.0)
    ref = F.cross_entropy(z, y, ignore_index=-100, label_smoothing=eps)
    ref.backward()
    assert calls == ["linear_ce_fwd", "linear_ce_bwd"]
    torch.testing.assert_close(ours, ref, **TOL[torch.float32])
    for a, r in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad, r.grad, **TOL[torch.float32])


# ---- CUDA only: autotuned configs, native bf16 dots, int64 offsets ---------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dh_mode", ["atomic", "two_pass"])
def test_cuda_matches_float64(dtype, dh_mode):
    h, W, b, y, g = _inputs(300, 5003, 200, dtype, device="cuda", seed=9)
    g = g / 300
    loss, lse = linear_ce_fwd(h, W, b, y, 0.1)
    dh, dW, db = linear_ce_bwd(g, h, W, b, y, lse, 0.1, dh_mode=dh_mode)
    r_loss, r_lse, r_dh, r_dW, r_db = _reference64(h.cpu(), W.cpu(), b.cpu(), y.cpu(), g.cpu(), 0.1)
    _close(loss, r_loss, dtype)
    _close(lse, r_lse, dtype)
    # Gradients are ~1/N: compare with an absolute tolerance on their scale.
    for a, r in [(dh, r_dh), (dW, r_dW), (db, r_db)]:
        _close(a, r, dtype, scale=float(r.abs().max()))


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_int64_offsets():
    # n * d = 524295 * 4096 > 2^31: the last classes' offsets only fit in int64.
    N, n, d = 32, (1 << 19) + 7, 4096
    h, W, b, y, g = _inputs(N, n, d, torch.bfloat16, device="cuda", seed=10)
    y[:4] = n - 1 - torch.arange(4, device="cuda")
    loss, lse = linear_ce_fwd(h, W, b, y)
    dh, dW, db = linear_ce_bwd(g, h, W, b, y, lse)
    t_loss, t_lse = chunked_ce_fwd_ref(h, W, b, y)
    t_dh, t_dW, t_db = chunked_ce_bwd_ref(g, h, W, b, y, t_lse)
    _close(loss, t_loss, torch.bfloat16)
    _close(dh, t_dh, torch.bfloat16, scale=float(t_dh.abs().max()))
    tail = slice(n - 1000, n)
    _close(dW[tail], t_dW[tail], torch.bfloat16, scale=float(t_dW[tail].abs().max()))
