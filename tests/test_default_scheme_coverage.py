"""The module's default candidate scheme pushes down as many classes per step as per-example
T, with a per-class gradient no noisier.

Why (python3 -m bench.shared_t_diagnosis, bench/results/shared-t-diagnosis-cpu-20261207.json): the
shared-T estimator is unbiased per row, but one T of |T| draws shared by N rows gives a class
outside S a gradient once every n / |T| steps, N rows' worth at once (weight n / |T| each),
where per-example T gives it small pieces about every n / (N |T|) steps. The expectation is
the same; Adam is not linear in it: it divides each coordinate by its recent RMS, so the
rare spike moves the row ~40x less per step than the same expected gradient in pieces
(n = 120,089, N = 1,024, |T| = 64). The classes outside every S are then barely pushed down
while targets keep being pushed up: the full softmax's tail mass grows and held-out
perplexity rises as training goes on (faiss, pycode task, 2026-12-07). The library's
default from 2026-12-01 to 2026-12-07 ("auto" -> shared T) fails both tests below.
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


def test_default_scheme_pushes_down_as_many_classes_per_step_as_per_example_t():
    n, d = 2000, 8
    h, y = _problem(n, d)
    pushed = {}
    for scheme in (None, "per_example"):
        layer = _layer(n, d, scheme).double()
        g = _weight_grad(layer, h, y)
        outside = torch.ones(n, dtype=torch.bool)
        outside[y] = False
        pushed[scheme] = int((g[outside].abs().sum(1) > 0).sum())
    # per-example: about n (1 - exp(-N |T| / n)) = 1,300 classes; a shared T: at most 8
    assert pushed["per_example"] > 1000
    assert pushed[None] >= 0.5 * pushed["per_example"], pushed


def test_default_scheme_gradient_per_class_is_no_noisier_than_per_example_t():
    n, d, draws = 2000, 8, 60
    h, y = _problem(n, d)
    outside = torch.ones(n, dtype=torch.bool)
    outside[y] = False
    var = {}
    for scheme in (None, "per_example"):
        layer = _layer(n, d, scheme).double()
        s1 = torch.zeros(n, d, dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        for _ in range(draws):  # the layer's generator moves on: fresh draws each call
            g = _weight_grad(layer, h, y)
            s1 += g
            s2 += g * g
        mean = s1 / draws
        var[scheme] = float((s2 / draws - mean * mean)[outside].sum(1).mean())
    # shared T: the N rows' pieces arrive together, variance ~ N x larger for aligned h
    assert var[None] <= 2.0 * var["per_example"], var


def test_explain_says_which_scheme_and_t_size_ran_and_why():
    layer = _layer(500, 8, num_uniform=16)
    text = layer.explain(batch=64)
    assert "per-example T" in text and "|T| = 16" in text and "why" in text
    shared = _layer(500, 8, "shared_samples", num_uniform=16)
    text = shared.explain(batch=64)
    assert "one T shared by the batch" in text and "16 draws" in text
