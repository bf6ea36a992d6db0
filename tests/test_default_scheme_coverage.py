"""The module's default candidate scheme covers many classes per step with a per-class
gradient far less noisy than the small shared T it replaced.

Why (python3 -m bench.shared_t_diagnosis, bench/results/shared-t-diagnosis-cpu-20261207.json): the
shared-T estimator is unbiased per row, but one T of |T| draws shared by N rows gives a class
outside S a gradient once every n / |T| steps, N rows' worth at once (weight n / |T| each).
The expectation is the same; Adam is not linear in it: it divides each coordinate by its
recent RMS, so rare spikes move the row less than the same expected gradient in pieces. With
|T| = 64 (the default from 2026-12-01 to 2026-12-07) the classes outside every S were barely
pushed down while targets kept being pushed up, and held-out perplexity rose as training went
on (faiss, pycode task). The default since 2026-12-07 shares a T sized for coverage,
max(|T|, min(1,024, n // 8)) draws (options.SamplingOptions.resolved: it led per-example T at
fixed CPU budgets on WordNet), a quarter of them an exact head of the most frequent targets
since 2026-12-07 (frequency.py); the former default fails both tests below. Per-example T pushes
more classes still, in smaller pieces; which trains faster per second is measured by
bench.accuracy, not asserted here.
"""

from __future__ import annotations

import torch

from triton_softmax import SampledSoftmaxLoss


def _layer(n, d, scheme=None, **kw):
    opts = dict(method="uniform", num_candidates=1, num_uniform=8, seed=0)
    opts.update(kw)
    if scheme is not None:
        opts["candidate_scheme"] = scheme
    return SampledSoftmaxLoss(n, d, **opts)


def _problem(n=2000, d=8, N=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    # trained hidden vectors share a direction (a mean): what makes one shared draw's N rows
    # of gradient add up instead of cancelling
    h = 0.5 * torch.randn(N, d, generator=g, dtype=torch.float64) + torch.randn(
        d, generator=g, dtype=torch.float64
    )
    y = torch.randint(0, 20, (N,), generator=g)  # a Zipf-like head: few frequent targets
    return h, y


def _weight_grad(layer, h, y):
    layer.zero_grad(set_to_none=True)
    layer(h, y).backward()
    return layer.weight.grad.detach().clone()


def _pushed(layer, h, y, n) -> int:
    g = _weight_grad(layer, h, y)
    outside = torch.ones(n, dtype=torch.bool)
    outside[y] = False
    return int((g[outside].abs().sum(1) > 0).sum())


def test_default_scheme_pushes_down_many_classes_per_step():
    n, d = 8000, 8
    h, y = _problem(n, d)
    default = _layer(n, d).double()
    so = default.sampling_options  # min(1024, n // 8) columns, more than the asked 8
    assert (so.num_head, so.num_uniform) == (250, 750)
    former = _layer(n, d, "shared_samples").double()  # one T of the asked 8
    pushed, pushed_former = _pushed(default, h, y, n), _pushed(former, h, y, n)
    # a head of 250 classes (the 20 targets among them) and 750 draws from the other 7,750
    # classes, near-uniform (no counts there): 230 + 7,750 (1 - exp(-750 / 7,750)) = 945
    assert pushed >= 850, pushed
    assert pushed_former <= 8 and pushed >= 100 * pushed_former, (pushed, pushed_former)


def test_default_scheme_gradient_per_class_is_far_less_noisy_than_a_small_shared_t():
    n, d, draws = 8000, 8, 40
    h, y = _problem(n, d)
    outside = torch.ones(n, dtype=torch.bool)
    outside[y] = False
    var = {}
    for scheme in (None, "shared_samples"):
        layer = _layer(n, d, scheme).double()
        s1 = torch.zeros(n, d, dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        for _ in range(draws):  # the layer's generator moves on: fresh draws each call
            g = _weight_grad(layer, h, y)
            s1 += g
            s2 += g * g
        mean = s1 / draws
        var[scheme] = float((s2 / draws - mean * mean)[outside].sum(1).mean())
    # a shared T's per-class variance falls as 1 / |T|: 1000 draws vs 8 is 125x less
    assert var[None] <= var["shared_samples"] / 50, var


def test_explain_says_which_scheme_and_t_size_ran_and_why():
    layer = _layer(8000, 8, num_uniform=16)
    text = layer.explain(batch=64)
    assert "one T shared by the batch (750 draws + an exact head of the 250 classes" in text
    assert "a dense N x 1000 product" in text and "q: frequency" in text
    uniform = _layer(8000, 8, "shared_samples", num_uniform=16, sampler="uniform")
    assert "(16 draws, a dense N x 16 product)" in uniform.explain(batch=64)
    assert "weight n / |T|" in uniform.explain(batch=64)
    assert "candidate_scheme='auto' -> shared_samples; why:" in text
    per_example = _layer(500, 8, "per_example", num_uniform=16)
    text = per_example.explain(batch=64)
    assert "per-example T" in text and "|T| = 16" in text
