"""exact_topk (chunked product + per-chunk top-k + merge) against plain h @ W.T + topk."""

import pytest
import torch

from triton_softmax import exact_topk


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("chunk", [None, 1, 3, 7, 1000])
@pytest.mark.parametrize("N,n,k", [(1, 1, 1), (5, 37, 4), (9, 50, 50), (3, 20, 30)])
def test_exact_topk_matches_dense(N, n, k, chunk, bias):
    g = torch.Generator().manual_seed(N * 100 + n)
    h = torch.randn(N, 6, generator=g, dtype=torch.float64)
    W = torch.randn(n, 6, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
    s, i = exact_topk(h, W, k, b, chunk=chunk)
    z = h.float() @ W.float().T + (b.float() if bias else 0.0)
    want_s, want_i = torch.topk(z, min(k, n), dim=1)
    assert s.shape == (N, min(k, n)) and i.dtype == torch.int64
    torch.testing.assert_close(s, want_s)
    assert torch.equal(i, want_i)  # random logits: no ties
