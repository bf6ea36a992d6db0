"""Launchers' offset arithmetic past 2^31 elements, without allocating such tensors.

A row stride of 2^31 + 64 elements over a lazily allocated (untouched, so not resident)
buffer: row 1 starts past the int32 range. Kernels that computed `row * stride` in int32
would read the wrong row (or fault); the results must equal the twin on compact copies.
Runs the Triton kernels (under the interpreter on CPU).
"""

import pytest
import torch

from triton_softmax import kernels
from triton_softmax.estimator import sampled_logits_bwd_ref, sampled_logits_fwd_ref
from triton_softmax.full import chunked_ce_fwd_ref
from triton_softmax.lsh import make_hyperplanes, simhash_codes_ref

STRIDE = 2**31 + 64


def _far_rows(rows: int, d: int, dtype=torch.float16) -> torch.Tensor:
    """(rows, d) view whose row r starts at element r * STRIDE; only its rows are touched."""
    try:
        big = torch.empty((rows - 1) * STRIDE + d, dtype=dtype)
    except RuntimeError as exc:  # pragma: no cover - a machine without overcommit
        pytest.skip(f"cannot reserve the virtual buffer: {exc}")
    view = big.as_strided((rows, d), (STRIDE, 1))
    g = torch.Generator().manual_seed(0)
    for r in range(rows):
        view[r] = torch.randn(d, generator=g).to(dtype)
    return view


def test_sampled_logits_fwd_bwd_with_rows_past_int32():
    d = 8
    W = _far_rows(2, d)
    h = torch.randn(3, d).half()
    ids = torch.tensor([[0, 1], [1, 0], [1, 1]])
    logw = torch.zeros(3, 2)
    y = torch.tensor([1, 0, 1])
    loss, lse = kernels.sampled_logits_fwd(h, W, None, ids, logw, y)
    ref_loss, ref_lse = sampled_logits_fwd_ref(h, W.contiguous(), None, ids, logw, y)
    torch.testing.assert_close(loss, ref_loss)
    g = torch.ones(3)
    coef, _, dh = kernels.sampled_logits_bwd(g, h, W, None, ids, logw, y, lse)
    rcoef, _, rdh = sampled_logits_bwd_ref(g, h, W.contiguous(), None, ids, logw, y, ref_lse)
    torch.testing.assert_close(coef, rcoef)
    torch.testing.assert_close(dh, rdh)


def test_simhash_with_rows_past_int32():
    d = 8
    x = _far_rows(2, d)
    planes = make_hyperplanes(d, 6, 3, seed=0)
    got = kernels.simhash_codes(x, planes, None, torch.tensor(4.0))
    ref = simhash_codes_ref(x.contiguous(), planes, None, torch.tensor(4.0))
    assert torch.equal(got, ref)


def test_linear_ce_fwd_with_rows_past_int32():
    d = 16
    W = _far_rows(2, d)
    h = torch.randn(3, d).half()
    y = torch.tensor([1, 0, 1])
    loss, lse = kernels.linear_ce_fwd(h, W, None, y, 0.0)
    ref_loss, ref_lse = chunked_ce_fwd_ref(h, W.contiguous(), None, y, 0.0)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(lse, ref_lse)
