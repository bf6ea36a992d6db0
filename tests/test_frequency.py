"""The frequency proposal and the exact head of a shared T (frequency.py, samplers.split_head).

Oracles: float64 torch (the exact partition function, the exact loss), the weights themselves
(the head is their top-k, the tail q their renormalised rest), and counts taken by hand.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers_schemes import _problem, train_losses

from triton_softmax import SampledSoftmaxLoss, sampled_softmax_from_candidates
from triton_softmax.frequency import FREQUENCY_POWER, ClassFrequency
from triton_softmax.samplers import CategoricalSampler


def test_split_head_takes_the_top_weights_and_draws_the_rest_in_proportion():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(40, generator=g, dtype=torch.float64) + 0.1
    head, tail = CategoricalSampler(w).split_head(6)
    assert sorted(head.tolist()) == sorted(w.argsort(descending=True)[:6].tolist())
    rest = w.clone()
    rest[head] = 0
    expected = rest / rest.sum()
    draws = tail.sample((200_000,), generator=torch.Generator().manual_seed(1))
    assert not torch.isin(draws, head).any()  # a head class is never drawn
    freq = torch.bincount(draws, minlength=40).double() / draws.numel()
    se = (expected * (1 - expected) / draws.numel()).sqrt()
    assert ((freq - expected).abs() <= 5 * se + 1e-12).all()
    assert torch.allclose(tail.log_q(torch.arange(40))[rest > 0].exp(), expected[rest > 0])
    with pytest.raises(ValueError, match="num_head must be in"):
        CategoricalSampler(w).split_head(40)


@pytest.mark.parametrize("seed", range(6))
def test_z_hat_with_an_exact_head_is_unbiased(seed):
    """Z-hat = exp(loss + z_y) over 1,500 shared draws of T: |mean - Z| < 5 standard errors
    (float64 exact Z); the head's classes that are in S are not counted twice."""
    g = torch.Generator().manual_seed(seed)
    n, d = 14, 4
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    h = torch.randn(1, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, n, (1,), generator=g)
    w = torch.rand(n, generator=g, dtype=torch.float64) + 0.2
    head = w.topk(4).indices
    # S holds a head class, so the head's weight-0 rule for S is exercised
    retrieved = torch.cat([head[:1], torch.randperm(n, generator=g)[:2]]).unsqueeze(0)
    loss = torch.cat([
        sampled_softmax_from_candidates(
            h, W, y, retrieved, num_uniform=3, num_head=4, reduction="none",
            scheme="shared_samples", sampler=w,
            generator=torch.Generator().manual_seed(seed * 10_000 + k),
        )
        for k in range(1500)
    ])  # fmt: skip
    z = (h @ W.T)[0]
    samples, Z = torch.exp(loss + z[y]), torch.exp(z).sum()
    z_score = float((samples.mean() - Z) / (samples.std() / math.sqrt(samples.numel())))
    assert abs(z_score) < 5, z_score


def test_a_head_with_s_covering_every_class_but_one_is_exact():
    """The tail is one class: every draw is it, weight 1 / (|T| * 1), so the loss is exact."""
    n = 12
    h, W, _, y, retrieved = _problem(N=6, n=n, d=5, seed=3)  # S with empty (-1) slots too
    w = torch.arange(n, 0, -1, dtype=torch.float64)  # class 11 is the tail
    loss = sampled_softmax_from_candidates(
        h, W, y, retrieved, num_uniform=4, num_head=n - 1, reduction="none",
        scheme="shared_samples", sampler=w,
    )  # fmt: skip
    exact = torch.nn.functional.cross_entropy(h @ W.T, y, reduction="none")
    torch.testing.assert_close(loss, exact, rtol=1e-12, atol=1e-12)


def test_num_head_needs_a_shared_scheme_and_class_weights():
    kw = dict(num_candidates=4, num_uniform=8, num_head=2)
    with pytest.raises(ValueError, match="num_head scores a head shared by the batch"):
        SampledSoftmaxLoss(50, 4, candidate_scheme="per_example", sampler="frequency", **kw)
    with pytest.raises(ValueError, match="largest q"):
        SampledSoftmaxLoss(50, 4, candidate_scheme="shared_samples", sampler="uniform", **kw)
    asked = SampledSoftmaxLoss(50, 4, candidate_scheme="shared_samples", **kw).sampling_options
    assert (asked.sampler, asked.num_head, asked.num_uniform) == ("frequency", 2, 8)
    with pytest.raises(ValueError, match="num_head must be below n = 50"):
        SampledSoftmaxLoss(50, 4, sampler=torch.ones(50), candidate_scheme="shared_samples",
                           num_head=50)  # fmt: skip
    with pytest.raises(ValueError, match="num_head must be >= 0"):
        SampledSoftmaxLoss(50, 4, num_head=-1)
    with pytest.raises(ValueError, match="leaves no T"):
        SampledSoftmaxLoss(50, 4, num_candidates=4, num_uniform=8, num_head=8)
    with pytest.raises(ValueError, match="needs the module"):
        h, W = torch.randn(2, 4), torch.randn(50, 4)
        sampled_softmax_from_candidates(
            h, W, torch.tensor([1, 2]), torch.zeros(2, 1, dtype=torch.long),
            scheme="shared_samples", sampler="frequency",
        )  # fmt: skip


def test_the_module_counts_its_training_targets_and_rebuilds_q_on_schedule():
    n = 64
    m = SampledSoftmaxLoss(n, 8, method="uniform", num_candidates=2, num_uniform=8,
                           refresh_every=3, ignore_index=-1)  # fmt: skip
    assert (m.sampling_options.sampler, m.sampling_options.num_head) == ("frequency", 2)
    hand = torch.zeros(n, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for step in range(5):
        y = torch.randint(0, 5, (16,), generator=g)
        y[0] = -1  # ignored: not counted
        m(torch.randn(16, 8, generator=g), y).backward()
        hand += torch.bincount(y[y >= 0], minlength=n).double()
        if step == 3:
            built = hand.clone()  # steps 0, 1, 2 (powers of two below 3) and 3 rebuild q
    assert torch.equal(m.frequency.counts, hand)
    assert torch.equal(m.frequency.built_from, built)
    q = m.frequency.sampler(torch.device("cpu")).probs
    expected = (built + 1) ** FREQUENCY_POWER
    torch.testing.assert_close(q, expected / expected.sum(), rtol=1e-12, atol=0)
    with torch.no_grad():  # evaluation counts nothing
        m.eval()
        m(torch.randn(4, 8), torch.tensor([9, 9, 9, 9]))
    assert torch.equal(m.frequency.counts, hand)


def test_a_resumed_module_draws_the_same_t_and_an_older_checkpoint_starts_counting():
    torch.manual_seed(0)
    n, d = 300, 8
    data = [(torch.randn(32, d), torch.randint(0, 40, (32,))) for _ in range(7)]

    def run(model, batches):
        return train_losses(model, batches, lr=0.1)

    kw = dict(method="uniform", num_candidates=4, num_uniform=32, refresh_every=3, seed=5)
    a = SampledSoftmaxLoss(n, d, **kw)
    b = SampledSoftmaxLoss(n, d, **kw)
    b.load_state_dict(a.state_dict())
    full = run(a, data)
    first = run(b, data[:4])  # steps 0-3: a checkpoint between rebuilds (step 3, next 6)
    c = SampledSoftmaxLoss(n, d, **kw)
    c.load_state_dict(b.state_dict())
    assert first + run(c, data[4:]) == full
    state = b.state_dict()
    state["_extra_state"].pop("frequency")  # a checkpoint from before the counts
    old = SampledSoftmaxLoss(n, d, **kw)
    old.load_state_dict(state)
    assert old.frequency.counts is None
    run(old, data[4:5])
    assert float(old.frequency.counts.sum()) == 32


def test_frequency_state_round_trips():
    f = ClassFrequency(10, 2)
    f.observe(torch.tensor([1, 1, 3]), -100, 0)
    g = ClassFrequency(10, 2)
    g.load_state_dict(f.state_dict(), torch.device("cpu"))
    assert torch.equal(g.counts, f.counts) and torch.equal(g.built_from, f.built_from)
    assert torch.equal(g.sampler(torch.device("cpu")).probs, f.sampler(torch.device("cpu")).probs)
    g.observe(torch.tensor([2]), -100, 1)  # the loaded counts are its own, not f's
    assert float(f.counts.sum()) == 3 and float(g.counts.sum()) == 4
