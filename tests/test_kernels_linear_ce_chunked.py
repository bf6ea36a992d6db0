"""kernels/linear_ce_chunked.py (the exact path's CUDA default) against float64 references.

On CPU the two kernels (the LSE pass and the dz-epilogue GEMM) run under TRITON_INTERPRET=1
with one 16 x 32 x 32 config, so the sizes below cross several row, class and d blocks with
partial blocks on every axis, and chunk=64 crosses several class chunks with a partial last
one. bf16 dots are upcast to fp32 under the interpreter (_dot_setup); dz is still stored in
bf16/fp16, and dW/db come back in the weight's/bias's dtype, so those are compared at the
input dtype's tolerance. Outputs the launchers allocate with _utils.empty are NaN-poisoned.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import TOL

import triton_softmax
from triton_softmax import kernels, ops
from triton_softmax.full import chunked_ce_bwd_ref, chunked_ce_fwd_ref
from triton_softmax.kernels import linear_ce_chunked as lcc
from triton_softmax.kernels.linear_ce_chunked import linear_ce_chunked_bwd, linear_ce_chunked_fwd

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

pytestmark = pytest.mark.usefixtures("poison_kernel_outputs")


def _inputs(N, n, d, dtype, bias=True, device="cpu", seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    h = (torch.randn(N, d, generator=gen) * scale).to(dtype).to(device)
    W = (torch.randn(n, d, generator=gen) / d**0.5).to(dtype).to(device)
    b = (torch.randn(n, generator=gen) * 0.5).to(dtype).to(device) if bias else None
    y = torch.randint(0, n, (N,), generator=gen).to(device)
    g = (torch.rand(N, generator=gen) + 0.5).to(device)
    return h, W, b, y, g


def _reference64(h, W, b, y, g, eps, z_loss=0.0):
    """loss, lse, dh, dW, db in float64 by autograd (loss + z_loss lse^2, weighted by g)."""
    h64 = h.double().cpu().requires_grad_()
    W64 = W.double().cpu().requires_grad_()
    b64 = b.double().cpu().requires_grad_() if b is not None else None
    y, g = y.cpu(), g.double().cpu()
    z = h64 @ W64.T + (b64 if b64 is not None else 0.0)
    lse = torch.logsumexp(z, 1)
    n = W.shape[0]
    loss = lse - (1 - eps) * z.gather(1, y[:, None]).squeeze(1) - eps / n * z.sum(1)
    ((loss + z_loss * lse.square()) * g).sum().backward()
    db = b64.grad if b64 is not None else None
    return loss.detach(), lse.detach(), h64.grad, W64.grad, db


def _close(actual, expected, dtype, scale=1.0):
    tol = TOL[dtype]
    torch.testing.assert_close(
        actual.double().cpu(), expected.double().cpu(), atol=tol["atol"] * scale, rtol=tol["rtol"]
    )


def _check_all(h, W, b, y, g, eps, dtype, chunk=None):
    loss, lse = linear_ce_chunked_fwd(h, W, b, y, eps)
    assert loss.dtype == lse.dtype == torch.float32
    dh, dW, db = linear_ce_chunked_bwd(g, h, W, b, y, lse, eps, chunk=chunk)
    # dW written once in the weight's dtype, db in the bias's; dh accumulated in fp32
    assert dh.dtype == torch.float32 and dW.dtype == W.dtype
    assert dh.shape == h.shape and dW.shape == W.shape
    r_loss, r_lse, r_dh, r_dW, r_db = _reference64(h, W, b, y, g, eps)
    _close(loss, r_loss, dtype)
    _close(lse, r_lse, dtype)
    _close(dh, r_dh, dtype)
    _close(dW, r_dW, dtype)
    if b is None:
        assert db is None
    else:
        assert db.dtype == b.dtype
        _close(db, r_db, dtype)
    return loss, lse, dh, dW, db


# ---- forward and backward against float64 -----------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "bias, eps, chunk",
    [(True, 0.1, 64), (False, 0.0, None), (True, 0.0, 96)],
    ids=["bias-smooth-chunk64", "nobias-one-chunk", "bias-chunk96"],
)
def test_fwd_bwd_matches_float64(dtype, bias, eps, chunk):
    # n = 203: 6 full class tiles + 11, chunks of 64 (4 chunks, the last 11 wide) or 96;
    # d = 40: one full + one partial K block; N = 37: 2 full row blocks + 5.
    h, W, b, y, g = _inputs(37, 203, 40, dtype, bias)
    _check_all(h, W, b, y, g, eps, dtype, chunk)


def test_fp32_agrees_with_the_chunked_twin():
    """fp32 inputs: dz stays fp32, so the kernels agree with the twin to fp32 rounding."""
    h, W, b, y, g = _inputs(37, 203, 40, torch.float32, seed=11)
    loss, lse = linear_ce_chunked_fwd(h, W, b, y, 0.1)
    grads = linear_ce_chunked_bwd(g, h, W, b, y, lse, 0.1, chunk=64)
    t_loss, t_lse = chunked_ce_fwd_ref(h, W, b, y, 0.1, chunk=64)
    t_grads = chunked_ce_bwd_ref(g, h, W, b, y, t_lse, 0.1, chunk=64)
    for a, t in [(loss, t_loss), (lse, t_lse), *zip(grads, t_grads)]:
        torch.testing.assert_close(a, t, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_epilogue_writes_dz(dtype):
    """The dz epilogue alone: with hidden = I (N = d), dW = dz^T h = dz^T exactly, so dW
    is the stored dz, compared with g softmax - t ((1 - eps) onehot + eps/n) in float64.
    Rows with g = t = 0 (ignored) must be exactly 0; one has logits that overflow."""
    N = d = 40
    n, eps = 203, 0.1
    _, W, b, y, g = _inputs(N, n, d, dtype, seed=12)
    h = torch.eye(N, dtype=dtype)
    t = g * 0.7  # a target-term gradient of its own (z-loss)
    g[[3, 17, 18]] = 0.0
    t[[3, 17, 18]] = 0.0
    W[:, 17] = 1e4  # row 17's logits z = W[:, 17] overflow; it is ignored
    _, lse = linear_ce_chunked_fwd(h, W, b, y, eps)
    _, dW, _ = linear_ce_chunked_bwd(g, h, W, b, y, lse, eps, target_grad=t, chunk=64)
    z = (W.double() + b.double()[:, None]).T  # (N, n): z[i] = W[:, i] + b
    p = torch.softmax(z, 1)
    onehot = torch.full_like(p, eps / n)
    onehot[torch.arange(N), y] += 1 - eps
    dz = g.double()[:, None] * p - t.double()[:, None] * onehot
    dz[[3, 17, 18]] = 0.0
    assert torch.equal(dW[:, [3, 17, 18]], torch.zeros_like(dW[:, [3, 17, 18]]))
    # one rounding of each element to the input dtype, nothing more
    atol = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    torch.testing.assert_close(dW.double().T, dz, atol=atol, rtol=0)


@pytest.mark.parametrize(
    "N, n, d",
    [(1, 203, 40), (37, 1, 24), (5, 31, 17), (40, 70, 3), (64, 300, 20)],
    ids=["N=1", "n=1", "n<block", "d=3", "rows=4-blocks"],
)
def test_edge_shapes(N, n, d):
    h, W, b, y, g = _inputs(N, n, d, torch.float32, seed=1)
    _check_all(h, W, b, y, g, 0.05, torch.float32, chunk=64)


def test_empty_batch():
    h, W, b, y, g = _inputs(0, 50, 16, torch.bfloat16)
    loss, lse = linear_ce_chunked_fwd(h, W, b, y)
    assert loss.shape == lse.shape == (0,)
    dh, dW, db = linear_ce_chunked_bwd(g, h, W, b, y, lse)
    assert dh.shape == (0, 16) and dW.dtype == torch.bfloat16
    assert not dW.any() and not db.any()


def test_strided_and_mixed_dtype_inputs():
    # hidden a transposed view, weight a column slice, bias a strided slice; bf16 hidden
    # with fp32 weight runs fp32 dots and an fp32 dz, and dW comes back fp32.
    h, W, b, y, g = _inputs(23, 75, 30, torch.float32, seed=3)
    h_t = h.T.contiguous().T
    W_wide = torch.cat([W, torch.randn_like(W)], 1)[:, :30]
    b_s = torch.stack([b, b], 1)[:, 0]
    assert not h_t.is_contiguous() and not W_wide.is_contiguous()
    _check_all(h_t, W_wide, b_s, y, g, 0.0, torch.float32, chunk=32)
    _check_all(h.bfloat16(), W, b, y, g, 0.0, torch.bfloat16, chunk=32)


def test_forward_widened_splits_agree(monkeypatch):
    """Partials over the byte cap: splits widen to several class tiles per program."""
    h, W, b, y, _ = _inputs(20, 203, 40, torch.float32, seed=2)
    base = linear_ce_chunked_fwd(h, W, b, y, 0.1)
    monkeypatch.setattr(lcc, "_PARTIAL_BYTES", 20 * 4 * 2 * 3)  # 3 splits of 96 columns
    assert lcc._fwd_splits(20, 203, h.device) == (3, 96)
    wide = linear_ce_chunked_fwd(h, W, b, y, 0.1)
    for a, e in zip(wide, base):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)


# ---- ignored rows, z-loss's target gradient, determinism -------------------------------------


def test_zero_grad_rows_get_exactly_zero():
    h, W, b, y, g = _inputs(37, 90, 24, torch.float32, seed=4)
    g[::3] = 0.0
    g[16:32] = 0.0  # one whole 16-row block with no gradient: its product is skipped
    h[5] = 1e30  # an ignored row whose logits overflow must not leak inf/NaN
    g[5] = 0.0
    y[7] = -100  # an ignored row's target may be anything (ignore_index)
    g[7] = 0.0
    _, lse = linear_ce_chunked_fwd(h, W, b, y)
    dh, dW, db = linear_ce_chunked_bwd(g, h, W, b, y, lse, chunk=32)
    assert torch.isfinite(dW).all() and torch.isfinite(db).all()
    assert torch.equal(dh[g == 0], torch.zeros_like(dh[g == 0]))
    keep = g != 0
    _, _, r_dh, r_dW, r_db = _reference64(h[keep], W, b, y[keep], g[keep], 0.0)
    _close(dh[keep], r_dh, torch.float32)
    _close(dW, r_dW, torch.float32)
    _close(db, r_db, torch.float32)


def test_all_rows_ignored():
    h, W, b, y, g = _inputs(20, 50, 16, torch.bfloat16)
    _, lse = linear_ce_chunked_fwd(h, W, b, y)
    dh, dW, db = linear_ce_chunked_bwd(torch.zeros_like(g), h, W, b, y, lse)
    assert not dh.any() and not dW.any() and not db.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_target_grad_gives_the_z_loss_gradient(dtype):
    """z-loss: grad_loss scaled by 1 + 2 z lse on the softmax part, the one-hot and
    smoothing terms by the plain gradient (target_grad)."""
    z_loss, eps = 1e-2, 0.1
    h, W, b, y, g = _inputs(37, 203, 40, dtype, seed=13, scale=2.0)
    _, lse = linear_ce_chunked_fwd(h, W, b, y, eps)
    g_p = g * (1.0 + 2.0 * z_loss * lse)
    dh, dW, db = linear_ce_chunked_bwd(g_p, h, W, b, y, lse, eps, target_grad=g, chunk=64)
    _, _, r_dh, r_dW, r_db = _reference64(h, W, b, y, g, eps, z_loss)
    for a, r in [(dh, r_dh), (dW, r_dW), (db, r_db)]:
        _close(a, r, dtype)


def test_two_runs_are_bitwise_equal():
    h, W, b, y, g = _inputs(37, 203, 40, torch.bfloat16, seed=7)
    runs = []
    for _ in range(2):
        loss, lse = linear_ce_chunked_fwd(h, W, b, y, 0.1)
        runs.append((loss, lse, *linear_ce_chunked_bwd(g, h, W, b, y, lse, 0.1, chunk=64)))
    for a, c in zip(*runs):
        assert torch.equal(a, c)


def test_mm_fp32_without_out_dtype(monkeypatch):
    """The dh product's fallbacks: on CPU fp32 copies (exact products, fp32 sums)."""
    gen = torch.Generator().manual_seed(14)
    a = torch.randn(33, 70, generator=gen).bfloat16()
    c = torch.randn(70, 20, generator=gen).bfloat16()
    out = lcc._mm_fp32(a, c)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), a.double() @ c.double(), atol=1e-4, rtol=1e-5)
    assert not lcc._mm_out_dtype_works("cpu")


def test_class_chunk():
    assert lcc.class_chunk(37, 203, torch.float32) == 203  # one chunk holds every class
    big = lcc.class_chunk(8192, 131072, torch.bfloat16)
    assert big % lcc._SPLIT_ALIGN == 0 and 8192 * big * 2 <= lcc._DZ_BYTES
    assert lcc.class_chunk(10**7, 10**6, torch.float32) == 2 * lcc._SPLIT_ALIGN


def test_validation():
    h, W, b, y, g = _inputs(4, 10, 8, torch.float32)
    _, lse = linear_ce_chunked_fwd(h, W, b, y)
    with pytest.raises(ValueError, match="agree on d"):
        linear_ce_chunked_fwd(h, W[:, :4], b, y)
    with pytest.raises(ValueError, match="bias"):
        linear_ce_chunked_fwd(h, W, b[:3], y)
    with pytest.raises(ValueError, match="target"):
        linear_ce_chunked_fwd(h, W, b, y.float())
    with pytest.raises(ValueError, match="label_smoothing"):
        linear_ce_chunked_fwd(h, W, b, y, 1.5)
    with pytest.raises(ValueError, match="grad_loss"):
        linear_ce_chunked_bwd(g[:2], h, W, b, y, lse)
    with pytest.raises(ValueError, match="target_grad"):
        linear_ce_chunked_bwd(g, h, W, b, y, lse, target_grad=g[:3])
    with pytest.raises(ValueError, match="chunk"):
        linear_ce_chunked_bwd(g, h, W, b, y, lse, chunk=0)
    with pytest.raises(TypeError, match="float64"):
        linear_ce_chunked_fwd(h.double(), W.double(), None, y)
    with pytest.raises(ValueError, match="TRITON_SOFTMAX_EXACT_KERNEL"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TRITON_SOFTMAX_EXACT_KERNEL", "atomic")
            ops.exact_kernel()


def test_gpu_configs_align_with_class_splits():
    for bm, bn, bk, _, _ in lcc._GEMM_ROWS:
        assert 256 % bn == 0 and min(bm, bn, bk) >= 16


def test_fp32_dots_prune_the_wide_tiles():
    import triton
    import triton.language as tl

    cfgs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}) for bm, bn, *_ in lcc._GEMM_ROWS]
    kept = lcc._prune(cfgs, {}, DOT_DTYPE=tl.float32)
    assert kept and all(c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 128 * 128 for c in kept)
    assert lcc._prune(cfgs, {}, DOT_DTYPE=tl.bfloat16) == cfgs


# ---- the whole path composed: public API -> autograd -> ops -> these launchers -----------------


def _spy(monkeypatch):
    calls = []
    for name in ("linear_ce_chunked_fwd", "linear_ce_chunked_bwd"):
        fn = getattr(kernels, name)
        monkeypatch.setattr(
            kernels, name, lambda *a, _fn=fn, _n=name, **k: (calls.append(_n), _fn(*a, **k))[1]
        )
    return calls


@pytest.mark.parametrize(
    "dtype, bias, eps, z_loss, reduction",
    [
        (torch.float32, True, 0.0, 0.0, "mean"),
        (torch.float32, False, 0.1, 1e-3, "sum"),
        (torch.float16, True, 0.1, 0.0, "mean"),
        (torch.bfloat16, True, 0.0, 1e-3, "none"),
    ],
)
def test_public_full_path_matches_float64_autograd(
    monkeypatch, dtype, bias, eps, z_loss, reduction
):
    """Chunked kernels through the interpreter against float64 autograd of F.cross_entropy
    (ignore_index, smoothing, bias, z-loss, reductions)."""
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")
    calls = _spy(monkeypatch)
    h, W, b, y, g = _inputs(29, 101, 24, dtype, bias, seed=8)
    y[3] = y[17] = -100
    leaves = [t.clone().requires_grad_() for t in (h, W) + ((b,) if bias else ())]
    ours = triton_softmax.sampled_softmax_cross_entropy(
        leaves[0],
        leaves[1],
        y,
        leaves[2] if bias else None,
        method="full",
        label_smoothing=eps,
        z_loss=z_loss,
        reduction=reduction,
    )
    w_out = g[: ours.numel()].reshape(ours.shape) if reduction == "none" else 1.0
    (ours * w_out).sum().backward()
    ref_leaves = [t.double().requires_grad_() for t in (h, W) + ((b,) if bias else ())]
    z = ref_leaves[0] @ ref_leaves[1].T + (ref_leaves[2] if bias else 0.0)
    ref = F.cross_entropy(z, y, ignore_index=-100, label_smoothing=eps, reduction="none")
    keep = (y != -100).double()
    ref = ref + z_loss * torch.logsumexp(z, 1).square() * keep
    ref = {"mean": ref.sum() / keep.sum(), "sum": ref.sum(), "none": ref}[reduction]
    (ref * (w_out.double() if reduction == "none" else 1.0)).sum().backward()
    assert calls == ["linear_ce_chunked_fwd", "linear_ce_chunked_bwd"]
    assert leaves[1].grad.dtype == dtype
    _close(ours, ref.detach(), dtype)
    for a, r in zip(leaves, ref_leaves):
        _close(a.grad, r.grad, dtype)


def test_fused_kernel_behind_the_option_with_z_loss(monkeypatch):
    """TRITON_SOFTMAX_EXACT_KERNEL=fused runs the old kernels; ops adds the z-loss target
    terms' difference afterwards. Same loss and gradients as the chunked default."""
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")
    h, W, b, y, _ = _inputs(21, 77, 16, torch.float32, seed=15)
    y[2] = -100
    grads = {}
    for kind in ("chunked", "fused"):
        monkeypatch.setenv("TRITON_SOFTMAX_EXACT_KERNEL", kind)
        leaves = [t.clone().requires_grad_() for t in (h, W, b)]
        loss = triton_softmax.sampled_softmax_cross_entropy(
            leaves[0], leaves[1], y, leaves[2], method="full", label_smoothing=0.1, z_loss=1e-2
        )
        loss.backward()
        grads[kind] = [loss.detach()] + [t.grad for t in leaves]
    for a, c in zip(grads["chunked"], grads["fused"]):
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


# ---- CUDA only: autotuned configs, native bf16 dots, determinism, int64 offsets --------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_float64(dtype):
    h, W, b, y, g = _inputs(300, 5003, 200, dtype, device="cuda", seed=9)
    g = g / 300
    loss, lse = linear_ce_chunked_fwd(h, W, b, y, 0.1)
    dh, dW, db = linear_ce_chunked_bwd(g, h, W, b, y, lse, 0.1, chunk=1024)
    r_loss, r_lse, r_dh, r_dW, r_db = _reference64(h, W, b, y, g, 0.1)
    _close(loss, r_loss, dtype)
    _close(lse, r_lse, dtype)
    assert dW.dtype == dtype and db.dtype == dtype
    for a, r in [(dh, r_dh), (dW, r_dW), (db, r_db)]:
        _close(a, r, dtype, scale=float(r.abs().max()))


@pytest.mark.cuda
def test_cuda_two_runs_bitwise_equal():
    h, W, b, y, g = _inputs(1000, 20011, 256, torch.bfloat16, device="cuda", seed=16)
    runs = []
    for _ in range(2):
        loss, lse = linear_ce_chunked_fwd(h, W, b, y, 0.1)
        runs.append((loss, lse, *linear_ce_chunked_bwd(g, h, W, b, y, lse, 0.1)))
    for a, c in zip(*runs):
        assert torch.equal(a, c)


@pytest.mark.cuda
def test_cuda_default_route_is_chunked(monkeypatch):
    calls = _spy(monkeypatch)
    h, W, b, y, _ = _inputs(64, 3001, 128, torch.bfloat16, device="cuda", seed=17)
    W.requires_grad_()
    triton_softmax.sampled_softmax_cross_entropy(h, W, y, b, method="full").backward()
    assert calls == ["linear_ce_chunked_fwd", "linear_ce_chunked_bwd"]
    assert W.grad.dtype == torch.bfloat16


@pytest.mark.cuda
@pytest.mark.slow
def test_cuda_int64_offsets():
    # n * d = 524295 * 4096 > 2^31: the last classes' offsets only fit in int64.
    N, n, d = 32, (1 << 19) + 7, 4096
    h, W, b, y, g = _inputs(N, n, d, torch.bfloat16, device="cuda", seed=10)
    y[:4] = n - 1 - torch.arange(4, device="cuda")
    loss, lse = linear_ce_chunked_fwd(h, W, b, y)
    dh, dW, db = linear_ce_chunked_bwd(g, h, W, b, y, lse)
    t_loss, t_lse = chunked_ce_fwd_ref(h, W, b, y)
    t_dh, t_dW, t_db = chunked_ce_bwd_ref(g, h, W, b, y, t_lse)
    _close(loss, t_loss, torch.bfloat16)
    _close(dh, t_dh, torch.bfloat16, scale=float(t_dh.abs().max()))
    tail = slice(n - 1000, n)
    _close(dW[tail], t_dW[tail], torch.bfloat16, scale=float(t_dW[tail].abs().max()))


def test_rows_past_int32():
    """W's and h's row 1 start past 2^31 elements (a lazily allocated buffer, see
    tests/test_int64_offsets.py): both kernels' row offsets must be int64."""
    from test_int64_offsets import _far_rows

    d = 16
    W = _far_rows(2, d)
    h = _far_rows(2, d)
    y = torch.tensor([1, 0])
    g = torch.tensor([1.0, 0.5])
    loss, lse = linear_ce_chunked_fwd(h, W, None, y, 0.1)
    dh, dW, _ = linear_ce_chunked_bwd(g, h, W, None, y, lse, 0.1)
    r_loss, r_lse, r_dh, r_dW, _ = _reference64(h.contiguous(), W.contiguous(), None, y, g, 0.1)
    _close(loss, r_loss, torch.float16)
    _close(lse, r_lse, torch.float16)
    _close(dh, r_dh, torch.float16)
    _close(dW, r_dW, torch.float16)
