"""autograd.py: the Functions against float64 formulas (shared candidates, z-loss, softcap)."""

import pytest
import torch
import torch.nn.functional as F
from helpers_schemes import _problem

from triton_softmax import SampledSoftmaxLoss, sampled_softmax_from_candidates
from triton_softmax.autograd import SharedCandidatesFunction
from triton_softmax.candidates import build_shared_candidates
from triton_softmax.samplers import LogUniformSampler, UniformSampler


@pytest.mark.parametrize("union", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_shared_function_gradcheck_and_sparse_equals_dense(union, bias):
    h, W, b, y, ret = _problem(N=4, n=15, d=3, bias=bias)
    s_ids, s_logw, sh_ids, sh_logw = build_shared_candidates(
        ret, y, 15, 5, UniformSampler(15), torch.Generator().manual_seed(1), union=union
    )
    h.requires_grad_(True)
    W.requires_grad_(True)
    params = (h, W) + ((b.requires_grad_(True),) if bias else ())

    def fn(h, W, b=None):
        return SharedCandidatesFunction.apply(
            h, W, b, s_ids, s_logw.double(), sh_ids, sh_logw.double(), y, False, 0.0
        )

    assert torch.autograd.gradcheck(fn, params)
    dense = torch.autograd.grad(fn(*params).sum(), params[1:])
    sparse_out = SharedCandidatesFunction.apply(
        *params[:2],
        params[2] if bias else None,
        s_ids,
        s_logw.double(),
        sh_ids,
        sh_logw.double(),
        y,
        True,
        0.0,
    )
    sparse = torch.autograd.grad(sparse_out.sum(), params[1:])
    for a, s in zip(dense, sparse):
        assert s.is_sparse
        torch.testing.assert_close(a, s.to_dense())


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_shared_function_matches_its_float64_oracle(impl, monkeypatch):
    """The S part runs through ops (kernels under TRITON_SOFTMAX_IMPL=triton)."""
    from oracles import shared_logits_bwd_ref, shared_logits_fwd_ref

    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", impl)
    h, W, b, y, ret = _problem(N=5, n=30, d=6, bias=True)
    s_ids, s_logw, sh_ids, sh_logw = build_shared_candidates(
        ret, y, 30, 7, LogUniformSampler(30), torch.Generator().manual_seed(2)
    )
    h32, W32, b32 = (t.float().requires_grad_(True) for t in (h, W, b))
    loss = SharedCandidatesFunction.apply(
        h32, W32, b32, s_ids, s_logw, sh_ids, sh_logw, y, False, 0.0
    )
    ref_loss, ref_lse = shared_logits_fwd_ref(h, W, b, s_ids, s_logw, sh_ids, sh_logw, y)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-5)
    g = torch.rand(5, dtype=torch.float64)
    dh, dW, db = torch.autograd.grad(loss, (h32, W32, b32), g.float())
    coef, ids, coef_sh, ref_dh = shared_logits_bwd_ref(
        g, h, W, b, s_ids, s_logw, sh_ids, sh_logw, y, ref_lse
    )
    torch.testing.assert_close(dh.double(), ref_dh, rtol=1e-5, atol=1e-5)
    ref_dW = torch.zeros_like(W).index_add_(
        0, ids.flatten(), (coef[..., None] * h[:, None]).reshape(-1, 6)
    )
    ref_dW.index_add_(0, sh_ids, coef_sh.T @ h)
    torch.testing.assert_close(dW.double(), ref_dW, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["full", "per_example", "shared_samples"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_z_loss_matches_float64_formula(path, eps):
    """loss_i + z * lse_i^2, gradients by autograd on the plain formula (float64)."""
    if path != "full" and eps:
        pytest.skip("label smoothing is full-path only")
    from oracles import shared_logits_fwd_ref

    from triton_softmax import sampled_softmax_cross_entropy
    from triton_softmax.estimator import sampled_logits_fwd_ref

    h, W, b, y, ret = _problem(N=5, n=25, d=4, bias=True)
    z = 0.01
    params = [t.clone().requires_grad_(True) for t in (h, W, b)]
    if path == "full":
        out = sampled_softmax_cross_entropy(
            *params[:2], y, params[2], method="full", label_smoothing=eps, z_loss=z, reduction="sum"
        )
        logits = params[0] @ params[1].T + params[2]
        ref = (
            F.cross_entropy(logits, y, label_smoothing=eps, reduction="sum")
            + z * torch.logsumexp(logits, 1).square().sum()
        )
    else:
        gen = torch.Generator().manual_seed(4)
        out = sampled_softmax_from_candidates(
            params[0],
            params[1],
            y,
            ret,
            params[2],
            num_uniform=6,
            scheme=path,
            z_loss=z,
            reduction="sum",
            generator=gen,
        )
        gen = torch.Generator().manual_seed(4)
        if path == "per_example":
            from triton_softmax.candidates import build_candidates

            ids, logw = build_candidates(ret, y, 25, 6, gen, logw_dtype=torch.float64)
            _, lse = sampled_logits_fwd_ref(*params[:2], params[2], ids, logw, y)
        else:
            s_ids, s_logw, sh_ids, sh_logw = build_shared_candidates(
                ret, y, 25, 6, UniformSampler(25), gen, logw_dtype=torch.float64
            )
            _, lse = shared_logits_fwd_ref(
                *params[:2], params[2], s_ids, s_logw, sh_ids, sh_logw, y
            )
        z_y = (params[0] * params[1][y]).sum(1) + params[2][y]
        ref = (lse - z_y).sum() + z * lse.square().sum()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, r in zip(torch.autograd.grad(out, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", ["full", "per_example"])
@pytest.mark.parametrize("z", [0.0, 0.02])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softcap_matches_float64_formula(path, z, eps):
    """Logits c tanh(z / c), with z-loss and (full path) label smoothing; autograd reference."""
    if path != "full" and eps:
        pytest.skip("label smoothing is full-path only")
    from triton_softmax import sampled_softmax_cross_entropy
    from triton_softmax.candidates import build_candidates

    c = 2.0
    h, W, b, y, ret = _problem(N=6, n=25, d=4, bias=True)
    h = h * 3  # logits well into the capped range
    params = [t.clone().requires_grad_(True) for t in (h, W, b)]
    if path == "full":
        out = sampled_softmax_cross_entropy(
            *params[:2],
            y,
            params[2],
            method="full",
            label_smoothing=eps,
            z_loss=z,
            softcap=c,
            reduction="sum",
        )
        capped = c * torch.tanh((params[0] @ params[1].T + params[2]) / c)
        lse = torch.logsumexp(capped, 1)
        ref = F.cross_entropy(capped, y, label_smoothing=eps, reduction="sum")
    else:
        out = sampled_softmax_from_candidates(
            params[0],
            params[1],
            y,
            ret,
            params[2],
            num_uniform=6,
            z_loss=z,
            softcap=c,
            reduction="sum",
            generator=torch.Generator().manual_seed(4),
        )
        gen = torch.Generator().manual_seed(4)
        ids, logw = build_candidates(ret, y, 25, 6, gen, logw_dtype=torch.float64)
        zc = c * torch.tanh(
            (torch.einsum("nd,nmd->nm", params[0], params[1][ids]) + params[2][ids]) / c
        )
        z_y = c * torch.tanh(((params[0] * params[1][y]).sum(1) + params[2][y]) / c)
        lse = torch.logsumexp(zc + logw.double(), 1)
        ref = (lse - z_y).sum()
    ref = ref + z * lse.square().sum()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, r in zip(torch.autograd.grad(out, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)


def test_softcap_validation():
    h, W, b, y, ret = _problem()
    with pytest.raises(ValueError, match="softcap"):
        sampled_softmax_from_candidates(h, W, y, ret, softcap=1.0, scheme="shared_samples")
    with pytest.raises(ValueError, match="softcap"):
        SampledSoftmaxLoss(10, 4, softcap=-1.0)


def test_one_params_object_equals_the_old_positional_flags():
    from triton_softmax.autograd import (
        ChunkedCrossEntropyFunction,
        LossParams,
        SampledSoftmaxFunction,
    )

    h, W, b, y, ret = _problem(N=4, n=20, d=3, bias=True)
    h.requires_grad_(True)
    ids, logw = ret.clamp_min(0), torch.zeros(ret.shape, dtype=torch.float64)
    p = LossParams(z_loss=0.01, softcap=3.0)
    a = SampledSoftmaxFunction.apply(h, W, b, ids, logw, y, p)
    old = SampledSoftmaxFunction.apply(h, W, b, ids, logw, y, False, False, 0.01, 3.0)
    torch.testing.assert_close(a, old, rtol=0, atol=0)
    (ga,) = torch.autograd.grad(a.sum(), h)
    (go,) = torch.autograd.grad(old.sum(), h)
    torch.testing.assert_close(ga, go, rtol=0, atol=0)
    c = ChunkedCrossEntropyFunction.apply(h, W, b, y, LossParams(0.1, 0.01))
    c_old = ChunkedCrossEntropyFunction.apply(h, W, b, y, 0.1, 0.01, 0.0, False)
    torch.testing.assert_close(c, c_old, rtol=0, atol=0)
    with pytest.raises(TypeError, match="LossParams"):
        SampledSoftmaxFunction.apply(h, W, b, ids, logw, y, False)


@pytest.mark.parametrize("fn", ["sampled", "shared"])
@pytest.mark.parametrize("z_loss,softcap", [(0.0, 0.0), (1e-2, 0.0), (0.0, 3.0), (1e-2, 3.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kept_rows_equal_the_backward_that_gathers_again(fn, z_loss, softcap, dtype, monkeypatch):
    """On the twin path the forward keeps the gathered rows and logits for the backward
    (ops.keeps_rows); over ops.KEEP_ROWS_BYTES it keeps nothing and the backward gathers the
    rows again. Both give the same loss and gradients, also for grads of W alone."""
    from triton_softmax import ops
    from triton_softmax.autograd import LossParams, SampledSoftmaxFunction

    if fn == "shared" and softcap:
        pytest.skip("the shared-candidates Function takes no softcap")
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "torch")
    h, W, b, y, ret = _problem(N=6, n=40, d=5, bias=True)
    s_ids, s_logw, sh_ids, sh_logw = build_shared_candidates(
        ret, y, 40, 9, UniformSampler(40), torch.Generator().manual_seed(4)
    )
    g = torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def run(keep: bool, wrt: str):
        monkeypatch.setattr(ops, "KEEP_ROWS_BYTES", 1 << 30 if keep else 0)
        assert ops.keeps_rows(h, W, s_ids) == keep
        leaves = [t.to(dtype).requires_grad_(name in wrt) for name, t in zip("hWb", (h, W, b))]
        if fn == "sampled":
            p = LossParams(z_loss=z_loss, softcap=softcap)
            loss = SampledSoftmaxFunction.apply(*leaves, s_ids, s_logw, y, p)
        else:
            p = LossParams(z_loss=z_loss)
            loss = SharedCandidatesFunction.apply(*leaves, s_ids, s_logw, sh_ids, sh_logw, y, p)
        wanted = [t for t in leaves if t.requires_grad]
        return [loss, *torch.autograd.grad(loss, wanted, g.to(loss.dtype))]

    for wrt in ("hWb", "W"):
        kept, again = run(True, wrt), run(False, wrt)
        assert len(kept) == len(again) == 1 + len(wrt)
        for a, e in zip(kept, again):
            assert torch.isfinite(a.float()).all()
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
