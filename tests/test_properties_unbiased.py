"""Property test (hypothesis): the estimator's Z-hat is unbiased for the partition
function under every sampler (uniform over the complement, uniform, log-uniform, class
weights, class weights with near-zero entries) and every candidate scheme; zero weights raise.

Z-hat of a row is exp(loss + z_y) (reduction "none"). Per-example draws are independent across
rows, so one call on M copies of a row gives M samples; the shared schemes draw one T per call,
so they take K calls. The test is derandomized (fixed draws: no flaky runs) and checks
|mean - Z| < 5 standard errors. Near-zero weights: 1e-2 of the mean weight per-example, 3e-2 for
the shared schemes (fewer draws): small enough that such a class is drawn a few dozen times in
the whole test, not never (a class drawn never cannot be checked by sampling; its weight
-log(|T| q) is checked exactly in test_near_zero_weight_gets_its_exact_log_weight).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triton_softmax import SampledSoftmaxLoss, sampled_softmax_from_candidates
from triton_softmax import candidates as C
from triton_softmax.samplers import make_sampler

SAMPLERS = ("complement", "uniform", "log_uniform", "weights", "near_zero")
SCHEMES = ("per_example", "shared_samples", "batch_union", "hybrid")
T = 16


def _weights(kind: str, n: int, g: torch.Generator, scheme: str) -> torch.Tensor:
    w = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    if kind == "near_zero":
        tiny = 1e-2 if scheme == "per_example" else 3e-2
        w[torch.randperm(n, generator=g)[:2]] = tiny * w.mean()
    return w


def _z_hat_samples(h, W, y, retrieved, sampler, scheme, seed):
    """(samples of Z-hat, exact Z) for one row h (1, d), target y (1,), S = retrieved (1, R)."""
    if scheme == "per_example":
        M = 6000
        loss = sampled_softmax_from_candidates(
            h.expand(M, -1),
            W,
            y.expand(M),
            retrieved.expand(M, -1),
            num_uniform=T,
            reduction="none",
            scheme=scheme,
            sampler=sampler,
            generator=torch.Generator().manual_seed(seed),
        )
    else:
        loss = torch.cat(
            [
                sampled_softmax_from_candidates(
                    h,
                    W,
                    y,
                    retrieved,
                    num_uniform=T,
                    reduction="none",
                    scheme=scheme,
                    sampler=sampler,
                    num_shared=5,
                    generator=torch.Generator().manual_seed(seed * 1000 + k),
                )
                for k in range(800)
            ]
        )
    z = h @ W.T
    return torch.exp(loss + z[0, y]), torch.exp(z).sum()


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    n=st.integers(6, 12),
    kind=st.sampled_from(SAMPLERS),
    scheme=st.sampled_from(SCHEMES),
    seed=st.integers(0, 10_000),
)
def test_z_hat_is_unbiased_under_every_sampler(n, kind, scheme, seed):
    if kind == "complement" and scheme != "per_example":
        scheme = "per_example"  # the complement proposal is the per-example scheme's own
    if scheme == "hybrid":
        kind = "uniform"  # hybrid's own draws are uniform over the complement: no proposal
    g = torch.Generator().manual_seed(seed)
    d = 4
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    h = torch.randn(1, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, n, (1,), generator=g)
    retrieved = torch.randperm(n, generator=g)[:3].unsqueeze(0)
    sampler = {"complement": "uniform", "uniform": make_sampler("uniform", n)}.get(kind, kind)
    if kind in ("weights", "near_zero"):
        sampler = _weights(kind, n, g, scheme)
    if scheme == "hybrid":
        sampler = "uniform"
    samples, Z = _z_hat_samples(h, W, y, retrieved, sampler, scheme, seed)
    stderr = samples.std() / math.sqrt(samples.numel())
    z_score = float((samples.mean() - Z) / stderr)
    assert abs(z_score) < 5, (kind, scheme, z_score)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(2, 50), zeros=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_zero_weights_raise_a_clear_error(n, zeros, seed):
    """Decided behaviour (samplers.py, README): a class with weight 0 would never be drawn and
    bias Z low, so zero (or negative, NaN, inf) weights raise ValueError naming the class."""
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, generator=g) + 0.1
    bad = torch.randperm(n, generator=g)[: min(zeros, n)]
    w[bad] = 0.0
    first = int(bad.min())
    with pytest.raises(ValueError, match=f"first: class {first}\\)"):
        make_sampler(w, n)
    with pytest.raises(ValueError, match="> 0 for every class"):
        SampledSoftmaxLoss(n, 4, method="lsh", sampler=w)


def test_near_zero_weight_gets_its_exact_log_weight():
    """A draw of a class with q = 1e-12 (never seen in a test's draws) gets log-weight
    -log(|T| q) to float64 precision: the estimator stays unbiased however small q is."""
    n = 5
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, 4e-12], dtype=torch.float64)
    q = make_sampler(w, n)
    t = torch.tensor([[4]])
    assert float(q.log_q(t)) == pytest.approx(math.log(4e-12 / (4 + 4e-12)), abs=1e-14)
    _, logw = C.build_candidates_q(
        torch.tensor([[0]]), torch.tensor([1]), n, 1, q, logw_dtype=torch.float64
    )
    assert logw.dtype == torch.float64
    cdf = q._cdf
    assert float(cdf[4] - cdf[3]) == pytest.approx(1e-12, rel=1e-3)  # drawn with that mass
