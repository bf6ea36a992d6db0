"""SampledSoftmaxLoss(method="uniform"): S = {target}, T uniform; what it says and what it is."""

import math

import pytest
import torch

from triton_softmax import SampledSoftmaxLoss, exact_topk
from triton_softmax.loss import sampled_softmax_cross_entropy, sampled_softmax_from_candidates


def test_uniform_explain_and_stats_say_uniform():
    m = SampledSoftmaxLoss(1000, 8, method="uniform", num_uniform=32)
    text = m.explain(16)
    assert text.startswith("method=uniform") and "S = {target}" in text and "no index" in text
    m(torch.randn(16, 8), torch.randint(0, 1000, (16,))).backward()
    s = m.stats()
    assert s["method"] == "uniform" and s["index"] is None and s["refresh_count"] == 0
    assert m.index is None
    shared = SampledSoftmaxLoss(1000, 8, method="uniform", candidate_scheme="shared_samples")
    assert "shared by the batch" in shared.explain(16)
    with pytest.raises(ValueError, match="method"):
        SampledSoftmaxLoss(10, 4, method="uniformly")


@pytest.mark.parametrize("scheme", ["per_example", "shared_samples"])
def test_uniform_is_the_functional_form_with_no_retrieved(scheme):
    torch.manual_seed(0)
    n, d, N = 500, 12, 9
    m = SampledSoftmaxLoss(n, d, method="uniform", num_uniform=40, candidate_scheme=scheme)
    h, y = torch.randn(N, d), torch.randint(0, n, (N,))
    got = m(h, y)
    gen = torch.Generator().manual_seed(0)  # the module's generator at step 0, seed 0
    want = sampled_softmax_from_candidates(
        h,
        m.weight,
        y,
        torch.empty(N, 0, dtype=torch.int64),
        num_uniform=40,
        generator=gen,
        scheme=scheme,
    )
    torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("scheme", ["per_example", "shared_samples"])
def test_uniform_partition_estimate_is_unbiased_float64(scheme):
    """mean over draws of exp(loss + z_y) (= the estimated Z) is Z within 5 standard errors."""
    torch.manual_seed(1)
    n, d, N, T, draws = 30, 5, 3, 4, 3000
    W = torch.randn(n, d, dtype=torch.float64)
    h = torch.randn(N, d, dtype=torch.float64)
    y = torch.randint(0, n, (N,))
    z = h @ W.T
    Z = torch.logsumexp(z, 1).exp()
    z_y = z.gather(1, y.unsqueeze(1)).squeeze(1)
    gen = torch.Generator().manual_seed(2)
    est = torch.stack(
        [
            (
                sampled_softmax_from_candidates(
                    h,
                    W,
                    y,
                    torch.empty(N, 0, dtype=torch.int64),
                    num_uniform=T,
                    reduction="none",
                    generator=gen,
                    scheme=scheme,
                )
                + z_y
            ).exp()
            for _ in range(draws)
        ]
    )
    se = est.std(0) / math.sqrt(draws)
    assert ((est.mean(0) - Z).abs() < 5 * se).all(), (est.mean(0), Z, se)


def test_uniform_exact_limit_float64():
    """Every other class drawn: with |T| large the estimate converges to the exact loss."""
    torch.manual_seed(3)
    n, d, N = 6, 4, 5
    W = torch.randn(n, d, dtype=torch.float64)
    h = torch.randn(N, d, dtype=torch.float64)
    y = torch.randint(0, n, (N,))
    exact = torch.nn.functional.cross_entropy(h @ W.T, y)
    got = sampled_softmax_from_candidates(
        h, W, y, torch.empty(N, 0, dtype=torch.int64), num_uniform=200_000
    )
    assert abs(float(got) - float(exact)) < 2e-3


def test_uniform_topk_is_exact():
    m = SampledSoftmaxLoss(300, 8, method="uniform")
    h = torch.randn(4, 8)
    s, i = m.topk(h, 5)
    s2, i2 = exact_topk(h, m.weight.detach(), 5)
    assert torch.equal(i, i2)


def test_functional_uniform_needs_no_index():
    """sampled_softmax_cross_entropy(method="uniform") is the estimator with nothing retrieved."""
    torch.manual_seed(4)
    n, d, N = 400, 6, 7
    W, h, y = torch.randn(n, d), torch.randn(N, d), torch.randint(0, n, (N,))
    got = sampled_softmax_cross_entropy(
        h, W, y, method="uniform", num_uniform=16, generator=torch.Generator().manual_seed(5)
    )
    want = sampled_softmax_from_candidates(
        h,
        W,
        y,
        torch.empty(N, 0, dtype=torch.int64),
        num_uniform=16,
        generator=torch.Generator().manual_seed(5),
    )
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_sharding_refuses_uniform():
    from triton_softmax import ShardSpec

    with pytest.raises(ValueError, match="method='uniform' cannot be used with a shard spec"):
        SampledSoftmaxLoss(100, 4, method="uniform", shard=ShardSpec())


def test_uniform_runs_drift_checks_without_an_index():
    m = SampledSoftmaxLoss(2000, 8, method="uniform", num_uniform=32, drift_every=1)
    h, y = torch.randn(16, 8), torch.randint(0, 2000, (16,))
    for _ in range(2):
        m(h, y).backward()
    assert len(m.drift_log) == 2 and m.index is None and m.stats()["refresh_count"] == 0
    assert all(math.isfinite(r["exact_loss"]) for r in m.drift_log)


def test_sparse_gradient_step_emits_no_torch_beta_warning():
    """The coalesced sparse gradient is built through a CSR product; torch's "CSR support is
    in beta" UserWarning is ours to absorb, not a message for the user's training loop."""
    import warnings

    m = SampledSoftmaxLoss(5000, 16, method="uniform", num_uniform=64, sparse_grad=True)
    h = torch.randn(8, 16, requires_grad=True)
    y = torch.randint(0, 5000, (8,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(h, y).backward()
    assert m.weight.grad.is_sparse
