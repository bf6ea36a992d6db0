"""Candidate schemes: unbiased, exact when S covers everything, and they train (samplers,
drift, compile, autograd and the bucket scheme have their own test files)."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers_schemes import SCHEMES, _problem, _teacher_accuracy

from triton_softmax import SampledSoftmaxLoss, sampled_softmax_from_candidates


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("sampler", ["uniform", "log_uniform", "weights"])
def test_every_scheme_is_unbiased_for_the_partition_function(scheme, sampler):
    """E[Z-hat] = Z: the mean of exp(lse) over many draws matches the exact sum (4 std errs)."""
    h, W, b, y, ret = _problem(N=3, n=30, d=4, seed=1)
    W = W * 0.5
    spec = (
        torch.rand(30, generator=torch.Generator().manual_seed(9)) + 0.1
        if sampler == "weights"
        else sampler
    )
    draws = []
    for k in range(3000):
        loss = sampled_softmax_from_candidates(
            h,
            W,
            y,
            ret[:, :2],
            num_uniform=4,
            scheme=scheme,
            sampler=spec,
            reduction="none",
            generator=torch.Generator().manual_seed(k),
        )
        z_y = (h * W[y]).sum(1)
        draws.append(torch.exp(loss + z_y))  # Z-hat per row
    zhat = torch.stack(draws)
    Z = torch.exp(torch.logsumexp(h @ W.T, 1))
    err = (zhat.mean(0) - Z).abs()
    se = zhat.std(0) / math.sqrt(len(draws))
    assert (err < 4 * se + 1e-9).all(), (err, se)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_schemes_exact_when_candidates_cover_everything(scheme):
    h, W, b, y, _ = _problem(n=12)
    everything = torch.arange(12).expand(h.shape[0], 12)
    loss = sampled_softmax_from_candidates(
        h, W, y, everything, num_uniform=5, scheme=scheme, sampler="log_uniform", reduction="sum"
    )
    torch.testing.assert_close(loss, F.cross_entropy(h @ W.T, y, reduction="sum"))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_module_trains_with_each_scheme(scheme):
    torch.manual_seed(0)
    n, d = 500, 16
    layer = SampledSoftmaxLoss(
        n,
        d,
        method="lsh",
        num_candidates=16,
        num_uniform=32,
        candidate_scheme=scheme,
        sparse_grad=True,
        refresh_every=10,
    )
    acc = _teacher_accuracy(layer)
    assert acc > 0.9, acc
