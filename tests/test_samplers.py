"""samplers.py: the proposals of T, the log-Q correction and accidental hits."""

import math

import pytest
import torch
from helpers_schemes import _problem

from triton_softmax import SampledSoftmaxLoss, sampled_softmax_from_candidates
from triton_softmax.candidates import build_candidates_q
from triton_softmax.samplers import CategoricalSampler, LogUniformSampler, UniformSampler


def test_log_uniform_sampler_matches_its_q():
    s = LogUniformSampler(50)
    q = s.log_q(torch.arange(50)).double().exp()
    assert abs(float(q.sum()) - 1.0) < 1e-6
    ids = s.sample((200_000,), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(ids, minlength=50).double() / 200_000
    assert (freq - q).abs().max() < 5e-3


def test_log_q_estimator_matches_its_formula_in_float64():
    """loss_i = log(sum_{S_i} e^z + sum_{t in T_i, t not in S_i} e^{z_t} / (|T| q(t))) - z_y."""
    h, W, b, y, ret = _problem(bias=True)
    n, T = W.shape[0], 9
    sampler = LogUniformSampler(n)
    ids, logw = build_candidates_q(ret, y, n, T, sampler, torch.Generator().manual_seed(3))
    loss = sampled_softmax_from_candidates(
        h,
        W,
        y,
        ret,
        b,
        num_uniform=T,
        sampler="log_uniform",
        reduction="none",
        generator=torch.Generator().manual_seed(3),
    )
    z = h @ W.T + b
    q = sampler.log_q(torch.arange(n)).double().exp()
    for i in range(h.shape[0]):
        S = {int(j) for j in ret[i] if j >= 0} | {int(y[i])}
        Zs = sum(math.exp(z[i, j]) for j in S)
        Zt = sum(math.exp(z[i, t]) / (T * q[t]) for t in ids[i, -T:].tolist() if t not in S)
        expect = math.log(Zs + Zt) - float(z[i, y[i]])
        # log-weights are stored in fp32 (cand_logw), the rest is fp64
        assert abs(float(loss[i]) - expect) < 1e-6 * abs(expect)


def test_accidental_hits_removed_or_kept():
    n, T = 5, 400
    ret = torch.tensor([[0, 1]])
    y = torch.tensor([2])
    kw = dict(generator=torch.Generator().manual_seed(0))
    ids, logw = build_candidates_q(
        ret, y, n, T, UniformSampler(n), remove_accidental_hits=True, **kw
    )
    hits = torch.isin(ids[0, 3:], torch.tensor([0, 1, 2]))
    assert hits.any() and torch.isinf(logw[0, 3:][hits]).all()
    assert torch.isfinite(logw[0, 3:][~hits]).all()
    kw = dict(generator=torch.Generator().manual_seed(0))
    _, kept = build_candidates_q(
        ret, y, n, T, UniformSampler(n), remove_accidental_hits=False, **kw
    )
    assert torch.isfinite(kept).all()
    torch.testing.assert_close(kept[0, 3:], torch.full((T,), math.log(n / T)))


def test_categorical_sampler_validates():
    with pytest.raises(ValueError, match="> 0 for every class"):
        CategoricalSampler(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="shape"):
        SampledSoftmaxLoss(10, 4, sampler=torch.ones(9))
    with pytest.raises(ValueError, match="candidate_scheme"):
        SampledSoftmaxLoss(10, 4, candidate_scheme="tiles")
