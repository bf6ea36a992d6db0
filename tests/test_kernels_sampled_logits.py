"""kernels/sampled_logits.py: forward, fused backward and grad_hidden against float64 twins.

The reference is the twin run on float64 copies of the very values the kernel reads (bf16 /
fp16 inputs rounded once), so the only difference left is the kernel's fp32 accumulation:
the tolerance is TOL[float32] for every input dtype (a looser one would hide a bf16 dot).
"""

import math

import pytest
import torch
from conftest import TOL

from triton_softmax import ops
from triton_softmax.estimator import (
    grad_hidden_ref,
    sampled_logits_coef_ref,
    sampled_logits_fwd_ref,
)
from triton_softmax.kernels.sampled_logits import (
    grad_hidden,
    sampled_logits_bwd,
    sampled_logits_coef,
    sampled_logits_fwd,
)

ACC_TOL = TOL[torch.float32]


pytestmark = pytest.mark.usefixtures("poison_kernel_outputs")


def problem(N, n, d, M, dtype, bias, seed, scale=0.4):
    g = torch.Generator().manual_seed(seed)
    h = (torch.randn(N, d, generator=g) * scale).to(dtype)
    W = (torch.randn(n, d, generator=g) * scale).to(dtype)
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    ids = torch.randint(0, n, (N, M), generator=g)
    logw = torch.log(torch.rand(N, M, generator=g) * 3 + 0.5)
    target = torch.randint(0, n, (N,), generator=g)
    if M > 3:
        ids[:, 1] = ids[:, 2]  # duplicate candidates
        logw[:, 3] = float("-inf")  # padding slot
        ids[:, 3] = target  # padding points at the target, as build_candidates does
    return h, W, b, ids, logw, target


def as64(t):
    return None if t is None else (t.double() if t.is_floating_point() else t)


def close(a, b):
    torch.testing.assert_close(a.double(), b.double(), equal_nan=True, **ACC_TOL)


SHAPES = [  # N, n, d, M: N = 1, d not a power of two, M not a multiple of the block
    (1, 9, 16, 1),
    (4, 40, 37, 21),
    (3, 70, 24, 50),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_fused_backward(dtype, bias, shape):
    N, n, d, M = shape
    h, W, b, ids, logw, target = problem(N, n, d, M, dtype, bias, seed=sum(shape))
    loss, lse = sampled_logits_fwd(h, W, b, ids, logw, target)
    assert loss.dtype == lse.dtype == torch.float32 and loss.shape == (N,)
    h64, W64, b64 = as64(h), as64(W), as64(b)
    loss64, lse64 = sampled_logits_fwd_ref(h64, W64, b64, ids, logw, target)
    close(loss, loss64)
    close(lse, lse64)

    g = torch.Generator().manual_seed(5)
    grad = torch.randn(N, generator=g)
    coef, out_ids, dh = sampled_logits_bwd(grad, h, W, b, ids, logw, target, lse)
    coef64, ids64 = sampled_logits_coef_ref(grad.double(), h64, W64, b64, ids, logw, target, lse64)
    assert torch.equal(out_ids, ids64)
    close(coef, coef64)
    close(dh, grad_hidden_ref(coef64, ids64, W64))
    coef2, ids2 = sampled_logits_coef(grad, h, W, b, ids, logw, target, lse)
    assert torch.equal(coef2, coef) and torch.equal(ids2, out_ids)
    close(grad_hidden(coef, out_ids, W), grad_hidden_ref(coef64, ids64, W64))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's log(0), -inf - -inf
def test_all_padding_row_matches_twin():
    """A row with no live candidate: lse = -inf, loss = -inf, coefficients NaN, as the twin."""
    h, W, b, ids, logw, target = problem(3, 20, 19, 5, torch.float32, True, seed=1)
    logw[1] = float("-inf")
    loss, lse = sampled_logits_fwd(h, W, b, ids, logw, target)
    loss_t, lse_t = sampled_logits_fwd_ref(h, W, b, ids, logw, target)
    close(loss, loss_t)
    assert math.isinf(lse[1].item()) and lse[1] < 0
    grad = torch.ones(3)
    coef, out_ids, dh = sampled_logits_bwd(grad, h, W, b, ids, logw, target, lse)
    coef_t, _ = sampled_logits_coef_ref(grad, h, W, b, ids, logw, target, lse_t)
    close(coef, coef_t)
    close(dh, grad_hidden_ref(coef_t, out_ids, W))


def test_strided_inputs_and_expanded_grad():
    N, n, d, M = 3, 30, 20, 9
    h, W, b, ids, logw, target = problem(N, n, d, M, torch.float32, True, seed=11)
    hT = h.T.contiguous().T  # (N, d) with strides (1, N)
    Wt = torch.cat([W, W], 1)[:, ::2]  # stride 2 along d
    Wt.copy_(W)
    idsT, logwT = ids.T.contiguous().T, logw.T.contiguous().T
    loss, lse = sampled_logits_fwd(hT, Wt, b, idsT, logwT, target)
    loss_t, lse_t = sampled_logits_fwd_ref(h.double(), W.double(), b.double(), ids, logw, target)
    close(loss, loss_t)
    grad = torch.ones(()).expand(N)  # what autograd passes for a sum: stride 0
    coef, out_ids, dh = sampled_logits_bwd(grad, hT, Wt, b, idsT, logwT, target, lse)
    coef_t, ids_t = sampled_logits_coef_ref(
        grad.double(), h.double(), W.double(), b.double(), ids, logw, target, lse_t
    )
    close(coef, coef_t)
    close(dh, grad_hidden_ref(coef_t, ids_t, W.double()))


def test_empty_batch_and_fp64_twin(monkeypatch):
    h, W, b, ids, logw, target = problem(2, 10, 8, 4, torch.float64, True, seed=2)
    loss, lse = sampled_logits_fwd(h[:0].float(), W.float(), b, ids[:0], logw[:0], target[:0])
    assert loss.shape == lse.shape == (0,)
    coef, out_ids, dh = sampled_logits_bwd(
        torch.ones(0), h[:0].float(), W.float(), None, ids[:0], logw[:0], target[:0], lse.float()
    )
    assert coef.shape == (0, 5) and dh.shape == (0, 8)
    # the launchers reject fp64; ops runs the twin there: exactly its numbers
    with pytest.raises(TypeError, match="float64"):
        sampled_logits_fwd(h, W, b, ids, logw, target)
    with pytest.raises(TypeError, match="float64"):
        grad_hidden(torch.zeros(2, 5, dtype=torch.float64), torch.zeros(2, 5, dtype=torch.long), W)
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")
    loss, lse = ops.sampled_logits_fwd(h, W, b, ids, logw, target)
    loss_t, lse_t = sampled_logits_fwd_ref(h, W, b, ids, logw, target)
    assert loss.dtype == torch.float64 and torch.equal(loss, loss_t) and torch.equal(lse, lse_t)
    g = torch.ones(2, dtype=torch.float64)
    coef, out_ids, dh = ops.sampled_logits_bwd(g, h, W, b, ids, logw, target, lse)
    coef_t, ids_t = sampled_logits_coef_ref(g, h, W, b, ids, logw, target, lse)
    assert torch.equal(coef, coef_t) and torch.equal(out_ids, ids_t)
    assert torch.equal(dh, grad_hidden_ref(coef_t, ids_t, W))


def test_rejects_mismatched_shapes():
    h, W, b, ids, logw, target = problem(2, 10, 8, 4, torch.float32, False, seed=2)
    with pytest.raises(ValueError):
        sampled_logits_fwd(h, W, b, ids, logw[:, :3], target)
    with pytest.raises(ValueError):
        sampled_logits_fwd(h, W[:, :7], b, ids, logw, target)
