"""kernels/scatter_grad.py: dense dW by atomics and by sort + segment-reduce, vs float64.

The reference is estimator.scatter_grad_weight_ref on float64 copies of the same values, so
the tolerance is the fp32 accumulation's for every input dtype.
"""

import pytest
import torch
from conftest import TOL

from triton_softmax import ops
from triton_softmax.estimator import scatter_grad_weight_ref
from triton_softmax.kernels.scatter_grad import scatter_grad_weight

pytestmark = pytest.mark.usefixtures("poison_kernel_outputs")


def problem(N, n, d, M1, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=g).to(dtype)
    coef = torch.randn(N, M1, generator=g)
    ids = torch.randint(0, n, (N, M1), generator=g)
    if M1 > 4:
        ids[:, 1] = ids[:, 2]  # duplicates within a row
        ids[:, 4] = 0  # the same row from every example
        coef[:, 3] = 0.0  # padding slots
    return coef, ids, h


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 5, 16, 1), (4, 30, 37, 21), (3, 50, 130, 9)])
def test_scatter_matches_float64(deterministic, dtype, shape):
    N, n, d, M1 = shape
    coef, ids, h = problem(N, n, d, M1, dtype, seed=sum(shape))
    dW = scatter_grad_weight(coef, ids, h, n, deterministic=deterministic)
    assert dW.shape == (n, d) and dW.dtype == torch.float32
    want = scatter_grad_weight_ref(coef.double(), ids, h.double(), n)
    torch.testing.assert_close(dW.double(), want, **TOL[torch.float32])
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[ids.reshape(-1)] = False
    assert (dW[untouched] == 0).all()


def test_deterministic_is_bitwise_repeatable_and_strided():
    coef, ids, h = problem(6, 7, 33, 12, torch.float32, seed=3)  # few rows, many collisions
    hT = h.T.contiguous().T
    a = scatter_grad_weight(coef, ids, hT, 7, deterministic=True)
    b = scatter_grad_weight(coef.T.contiguous().T, ids.T.contiguous().T, h, 7, deterministic=True)
    assert torch.equal(a, b)
    torch.testing.assert_close(
        a.double(), scatter_grad_weight_ref(coef.double(), ids, h.double(), 7), **TOL[torch.float32]
    )


@pytest.mark.parametrize("deterministic", [False, True])
def test_empty_batch_gives_zeros(deterministic):
    coef, ids, h = problem(2, 9, 8, 3, torch.float32, seed=0)
    dW = scatter_grad_weight(coef[:0], ids[:0], h[:0], 9, deterministic=deterministic)
    assert dW.shape == (9, 8) and (dW == 0).all()


def test_fp64_runs_the_twin(monkeypatch):
    """The launcher rejects fp64; ops runs the twin there, even under IMPL=triton."""
    coef, ids, h = problem(3, 9, 8, 5, torch.float64, seed=0)
    coef = coef.double()
    with pytest.raises(TypeError, match="float64"):
        scatter_grad_weight(coef, ids, h, 9)
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")
    assert torch.equal(
        ops.scatter_grad_weight(coef, ids, h, 9), scatter_grad_weight_ref(coef, ids, h, 9)
    )
