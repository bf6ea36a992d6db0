"""Property tests (hypothesis): exactness, order invariance, duplicate invariance."""

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triton_softmax import (
    FaissIndex,
    sampled_softmax_cross_entropy,
    sampled_softmax_from_candidates,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 9))
    N = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    bias = draw(st.booleans())
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=g, dtype=torch.float64)
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
    y = torch.randint(0, n, (N,), generator=g)
    num_uniform = draw(st.integers(0, 6))
    return h, W, b, y, num_uniform, seed


def _loss_and_grads(fn, h, W, b):
    params = [h.clone().requires_grad_(True), W.clone().requires_grad_(True)]
    if b is not None:
        params.append(b.clone().requires_grad_(True))
    loss = fn(*params)
    return loss.detach(), torch.autograd.grad(loss, params)


def _exact_fn(y):
    def fn(h, W, b=None):
        return F.cross_entropy(h @ W.T + (b if b is not None else 0), y, reduction="sum")

    return fn


@SETTINGS
@given(problems(), st.sampled_from(["full", "auto", "estimator", "faiss"]))
def test_every_path_is_exact_when_candidates_cover_all_classes(problem, path):
    """full: the chunked path; auto: |S| >= n routes to it; estimator: S = all classes in a
    random order with duplicates; faiss: S = a flat index's top-n (every class)."""
    h, W, b, y, T, seed = problem
    n, N = W.shape[0], h.shape[0]
    exact = _loss_and_grads(_exact_fn(y), h, W, b)
    if path in ("full", "auto"):

        def fn(h, W, b=None):
            return sampled_softmax_cross_entropy(
                h, W, y, b, method=path, num_candidates=n, num_uniform=T, reduction="sum"
            )
    else:
        if path == "estimator":
            g = torch.Generator().manual_seed(seed)
            perm = torch.stack([torch.randperm(n, generator=g) for _ in range(N)])
            retrieved = torch.cat([perm, perm[:, : n // 2]], dim=1)
        else:
            retrieved = (
                FaissIndex("flat")
                .build(W.float(), None if b is None else b.float())
                .search(h.float(), n)
            )

        def fn(h, W, b=None):
            return sampled_softmax_from_candidates(
                h, W, y, retrieved, b, num_uniform=T, reduction="sum"
            )

    got = _loss_and_grads(fn, h, W, b)
    torch.testing.assert_close(got[0], exact[0], rtol=1e-9, atol=1e-9)
    for a, r in zip(got[1], exact[1]):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(problems(), st.integers(1, 30))
def test_estimator_invariant_to_candidate_order_and_duplicates(problem, R):
    h, W, b, y, T, seed = problem
    n, N = W.shape[0], h.shape[0]
    g = torch.Generator().manual_seed(seed + 1)
    retrieved = torch.randint(-1, n, (N, R), generator=g)

    def loss_for(ret):
        return _loss_and_grads(
            lambda h, W, b=None: sampled_softmax_from_candidates(
                h,
                W,
                y,
                ret,
                b,
                num_uniform=T,
                reduction="sum",
                generator=torch.Generator().manual_seed(7),
            ),
            h,
            W,
            b,
        )

    base = loss_for(retrieved)
    # Reordering S changes which uniform draws land where only through S's *set*, which is
    # unchanged; duplicating entries of S must change nothing.
    shuffled = retrieved[:, torch.randperm(R, generator=g)]
    dup = torch.cat([retrieved, retrieved[:, : max(1, R // 2)]], dim=1)
    for other in (loss_for(shuffled), loss_for(dup)):
        torch.testing.assert_close(other[0], base[0], rtol=1e-9, atol=1e-9)
        for a, r in zip(other[1], base[1]):
            torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)
