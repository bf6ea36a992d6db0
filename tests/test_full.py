"""The chunked exact path against torch's cross_entropy in float64."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from triton_softmax import sampled_softmax_cross_entropy
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


def _threads(k: int):
    """A context that runs its body with k intra-op threads (the twin's class parts)."""
    import contextlib

    @contextlib.contextmanager
    def cm():
        before = torch.get_num_threads()
        torch.set_num_threads(k)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    return cm()


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("eps,softcap", [(0.0, 0.0), (0.1, 0.0), (0.1, 3.0)])
def test_class_parts_match_float64(threads, bias, eps, softcap):
    """Several class parts on worker threads (odd sizes, a last chunk and a last part shorter
    than the others, targets in every part) against torch's cross_entropy in float64."""
    from triton_softmax.reference.linear_ce import class_parts

    g = torch.Generator().manual_seed(threads)
    N, n, d, chunk = 13, 101, 7, 9
    h = torch.randn(N, d, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    y = torch.cat([torch.tensor([0, n - 1, 50]), torch.randint(0, n, (N - 3,), generator=g)])
    gl = torch.randn(N, generator=g, dtype=torch.float64)  # signed: reduction "none" upstream
    with _threads(threads):
        parts = class_parts(n, chunk, h.device)
        loss, lse = chunked_ce_fwd_ref(h, W, b, y, eps, chunk, softcap)
        dh, dW, db = chunked_ce_bwd_ref(gl, h, W, b, y, lse, eps, chunk, softcap)
        assert torch.get_num_threads() == threads  # the caller's setting is left as it was
    assert len(parts) == threads
    z = h @ W.T + (b if bias else 0)
    z = softcap * torch.tanh(z / softcap) if softcap else z
    ref = F.cross_entropy(z, y, reduction="none", label_smoothing=eps)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse, torch.logsumexp(z, 1), rtol=1e-12, atol=1e-12)
    params = (h, W) + ((b,) if bias else ())
    ref_g = torch.autograd.grad((ref * gl).sum(), params)
    for got, want in zip((dh, dW, db), ref_g):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_class_parts_cover_the_classes_in_whole_chunks():
    from triton_softmax.reference.linear_ce import class_parts

    cpu = torch.device("cpu")
    for n, chunk in [(1, 256), (100, 7), (1000, 256), (257, 256)]:
        for threads in (1, 2, 3, 8):
            with _threads(threads):
                parts = class_parts(n, chunk, cpu)
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert all(lo % chunk == 0 and lo < hi for lo, hi in parts)
            assert len(parts) == min(threads, -(-n // chunk))


@pytest.mark.parametrize("threads", [1, 2])
def test_full_path_deterministic(threads):
    """Two runs of the exact path, forward and backward in fp32, are bitwise equal."""
    g = torch.Generator().manual_seed(3)
    N, n, d = 37, 3000, 16
    W0 = torch.randn(n, d, generator=g) * 0.3
    h0 = torch.randn(N, d, generator=g)
    y = torch.randint(0, n, (N,), generator=g)
    y[5] = -100
    out = []
    with _threads(threads):
        for _ in range(2):
            W = W0.clone().requires_grad_(True)
            h = h0.clone().requires_grad_(True)
            loss = sampled_softmax_cross_entropy(h, W, y, method="full", label_smoothing=0.05)
            loss.backward()
            out.append((loss.detach(), h.grad, W.grad))
    for a, b in zip(*out):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_full_path_options_against_float64(dtype, reduction):
    """The CPU path on worker threads with bias, ignore_index, label smoothing, z-loss, a
    non-contiguous weight, low-precision inputs and every reduction, against float64."""
    g = torch.Generator().manual_seed(4)
    N, n, d = 21, 1500, 24
    W64 = torch.randn(d, n, generator=g, dtype=torch.float64).T * 0.2  # non-contiguous
    h64 = torch.randn(N, d, generator=g, dtype=torch.float64)
    b64 = torch.randn(n, generator=g, dtype=torch.float64) * 0.1
    y = torch.randint(0, n, (N,), generator=g)
    y[[2, 7]] = -100
    eps, zl = 0.1, 1e-3
    gout = torch.randn(N, generator=g, dtype=torch.float64) if reduction == "none" else None

    def run(h, W, b, fn):
        h, W, b = (t.detach().requires_grad_(True) for t in (h, W, b))
        loss = fn(h, W, b)
        (loss * gout.to(loss.dtype) if gout is not None else loss).sum().backward()
        return loss.double(), h.grad.double(), W.grad.double(), b.grad.double()

    def ours(h, W, b):
        return sampled_softmax_cross_entropy(
            h, W, y, bias=b, method="full", label_smoothing=eps, z_loss=zl, reduction=reduction
        )

    def torch_ref(h, W, b):
        z = h @ W.T + b
        rows = F.cross_entropy(z, y, reduction="none", label_smoothing=eps)
        valid = y != -100
        rows = torch.where(valid, rows + zl * torch.logsumexp(z, 1).square(), 0.0)
        if reduction == "none":
            return rows
        return rows.sum() if reduction == "sum" else rows.sum() / valid.sum()

    lo = (h64.to(dtype), W64.to(dtype), b64.to(dtype))
    with _threads(2):
        got = run(*lo, ours)
    want = run(*(t.double() for t in lo), torch_ref)  # same rounded inputs, in float64
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-3)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)


def _loss_in_child(queue):
    torch.set_num_threads(2)
    h, W = torch.randn(5, 4), torch.randn(700, 4)
    loss, _ = chunked_ce_fwd_ref(h, W, None, torch.arange(5), chunk=256)
    queue.put(bool(torch.isfinite(loss).all()))


def test_class_parts_work_in_a_forked_child():
    """After the parent ran its class parts on worker threads, a forked child (a DataLoader
    worker) computes the loss too (the parent's worker threads do not exist there)."""
    import multiprocessing

    with _threads(2):
        chunked_ce_fwd_ref(torch.randn(5, 4), torch.randn(700, 4), None, torch.arange(5), chunk=256)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_loss_in_child, args=(queue,))
        child.start()
        child.join(timeout=60)
        alive = child.is_alive()
        if alive:
            child.kill()
    assert not alive and child.exitcode == 0 and queue.get(timeout=5)
