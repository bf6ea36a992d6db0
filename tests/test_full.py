"""The chunked exact path against torch's cross_entropy in float64."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from triton_softmax.autograd import ChunkedCrossEntropyFunction
from triton_softmax.full import chunked_ce_bwd_ref, chunked_ce_fwd_ref


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [None, 7, 64])
def test_chunked_matches_cross_entropy(bias, eps, chunk):
    g = torch.Generator().manual_seed(0)
    N, n, d = 10, 61, 9
    h = torch.randn(N, d, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    y = torch.randint(0, n, (N,), generator=g)
    gl = torch.rand(N, generator=g, dtype=torch.float64)
    loss, lse = chunked_ce_fwd_ref(h, W, b, y, eps, chunk)
    logits = h @ W.T + (b if bias else 0)
    ref = F.cross_entropy(logits, y, reduction="none", label_smoothing=eps)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse, torch.logsumexp(logits, 1), rtol=1e-12, atol=1e-12)
    dh, dW, db = chunked_ce_bwd_ref(gl, h, W, b, y, lse, eps, chunk)
    params = (h, W) + ((b,) if bias else ())
    ref_g = torch.autograd.grad((ref * gl).sum(), params)
    torch.testing.assert_close(dh, ref_g[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dW, ref_g[1], rtol=1e-12, atol=1e-12)
    if bias:
        torch.testing.assert_close(db, ref_g[2], rtol=1e-12, atol=1e-12)


def test_function_gradcheck():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 6, 3])
    assert torch.autograd.gradcheck(
        lambda h, W, b: ChunkedCrossEntropyFunction.apply(h, W, b, y, 0.05, 0.0, 0.0, False),
        (h, W, b),
    )


def test_large_n_never_allocates_n_by_N_logits():
    """n = 10^6 classes, N = 256: an (N, n) fp32 logits tensor would be 1 GiB.

    Run in a fresh process and compare its peak RSS with the size of that tensor.
    """
    code = textwrap.dedent(
        """
        import resource, torch
        from triton_softmax import sampled_softmax_cross_entropy
        torch.manual_seed(0)
        n, d, N = 1_000_000, 8, 256
        W = torch.randn(n, d, requires_grad=True)
        h = torch.randn(N, d, requires_grad=True)
        y = torch.randint(0, n, (N,))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        loss = sampled_softmax_cross_entropy(h, W, y, method="full")
        loss.backward()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((peak - base) * 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown = int(out.stdout.strip().splitlines()[-1])
    logits_bytes = 256 * 1_000_000 * 4
    # dW (32 MB) plus chunk temporaries; far below one (N, n) tensor
    assert grown < logits_bytes / 4, grown
