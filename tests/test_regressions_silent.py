"""One regression test per input that gave a silently wrong result or a bad error before the
fixes of 2026-11-30. Each test fails on the code before the fix (commit d0fa118): checked by running
this file against that commit's package; the failure each saw is in its docstring.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from triton_softmax import SampledSoftmaxLoss, sampled_softmax_cross_entropy
from triton_softmax import candidates as C
from triton_softmax import functional as Fn
from triton_softmax.loss import sampled_softmax_from_candidates
from triton_softmax.samplers import make_sampler

METHODS = ("full", "lsh", "faiss")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_row01_uint8_target_with_default_ignore_index():
    """Before: -100 cast to uint8 is 156, so class 156 was treated as ignored: loss 0 on every
    path (the sampled ones too), no gradient."""
    torch.manual_seed(0)
    n, d = 1000, 16
    h, W = torch.randn(4, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
    y8 = torch.tensor([156, 3, 7, 9], dtype=torch.uint8)
    exact = sampled_softmax_cross_entropy(h, W, y8, method="full", reduction="none")
    ref = F.cross_entropy(h @ W.T, y8.long(), reduction="none")
    torch.testing.assert_close(exact, ref, atol=1e-12, rtol=0)
    for method in ("lsh", "faiss"):
        kw = dict(method=method, num_candidates=32, num_uniform=32, reduction="none")
        got = sampled_softmax_cross_entropy(h, W, y8, generator=_gen(), **kw)
        as_int64 = sampled_softmax_cross_entropy(h, W, y8.long(), generator=_gen(), **kw)
        assert float(got[0]) > 0
        torch.testing.assert_close(got, as_int64, atol=0, rtol=0)


@pytest.mark.parametrize("dtype,n,label", [(torch.uint8, 300, 255), (torch.int16, 40_000, 32_000)])
def test_row02_narrow_target_dtypes_with_large_n(dtype, n, label):
    """Before: ValueError 'target values must be in [0, n)' for valid labels (n wrapped)."""
    torch.manual_seed(0)
    h, W = torch.randn(2, 4), torch.randn(n, 4)
    y = torch.tensor([label, 1], dtype=dtype)
    got = sampled_softmax_cross_entropy(h, W, y, method="full")
    torch.testing.assert_close(got, F.cross_entropy(h @ W.T, y.long()), atol=1e-5, rtol=1e-5)


def test_row03_zero_sampler_weights_raise():
    """Before: accepted; zero-weight classes were never drawn and Z was biased low."""
    w = torch.ones(50)
    w[10:20] = 0
    with pytest.raises(ValueError, match="> 0 for every class.*class 10"):
        SampledSoftmaxLoss(50, 8, method="lsh", sampler=w)
    h, W, y = torch.randn(2, 8), torch.randn(50, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match="sampler weights"):
        sampled_softmax_from_candidates(h, W, y, torch.zeros(2, 1).long(), sampler=w)
    with pytest.raises(ValueError, match="finite"):
        make_sampler(torch.tensor([1.0, float("inf")]), 2)


@pytest.mark.parametrize("sampler", ["uniform", "log_uniform", "weights"])
@pytest.mark.parametrize("scheme", ["per_example", "shared_samples"])
def test_row04_float64_log_weights(sampler, scheme):
    """Before: log-weights of T were float32 (candidates.py, samplers' log_q(...).float()):
    the float64 loss was off its float64 oracle by ~1e-7."""
    torch.manual_seed(0)
    n, d, R, T = 1000, 8, 10, 7
    h, W = torch.randn(3, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
    y = torch.tensor([1, 2, 3])
    retrieved = torch.arange(R).expand(3, R)
    spec = torch.rand(n, dtype=torch.float64) + 0.3 if sampler == "weights" else sampler
    got = sampled_softmax_from_candidates(
        h,
        W,
        y,
        retrieved,
        num_uniform=T,
        reduction="none",
        sampler=spec,
        generator=_gen(1),
        scheme=scheme,
    )
    # the same draws, then the weights of T recomputed here in float64
    q = make_sampler(spec, n)
    if scheme == "per_example" and sampler == "uniform":
        ids, _ = C.build_candidates(retrieved, y, n, T, _gen(1))
        t = ids[:, R + 1 :]
        t_logw = torch.full(t.shape, math.log((n - R) / T), dtype=torch.float64)
        s_ids = ids[:, : R + 1]
    elif scheme == "per_example":
        ids, _ = C.build_candidates_q(retrieved, y, n, T, q, _gen(1))
        t, s_ids = ids[:, R + 1 :], ids[:, : R + 1]
    else:
        s_ids, _, t, _ = C.build_shared_candidates(retrieved, y, n, T, q, _gen(1))
        t = t.expand(3, -1)
    if not (scheme == "per_example" and sampler == "uniform"):
        if sampler == "weights":
            log_q = (spec / spec.sum()).log()[t]
        elif sampler == "uniform":  # the shared scheme draws uniform T over all n classes
            log_q = torch.full(t.shape, -math.log(n), dtype=torch.float64)
        else:
            log_q = (torch.log1p(1.0 / (t.double() + 1.0)) / math.log(n + 1)).log()
        t_logw = (-log_q - math.log(T)).masked_fill(t < R, float("-inf"))  # hits of S removed
    s_logw = torch.zeros(3, R + 1, dtype=torch.float64)
    s_logw[:, :R] = torch.where(retrieved == y.unsqueeze(1), float("-inf"), 0.0)
    z_s = torch.einsum("nd,nmd->nm", h, W[s_ids])
    z_t = torch.einsum("nd,nmd->nm", h, W[t])
    lse = torch.logsumexp(torch.cat([z_s + s_logw, z_t + t_logw], 1), 1)
    ref = lse - (h * W[y]).sum(1)
    assert (got - ref).abs().max() <= 1e-12


def _nan_weight_problem():
    torch.manual_seed(0)
    n, d, N = 300, 8, 6
    W = torch.randn(n, d)
    W[17] = float("nan")
    return W, torch.randn(N, d), torch.randint(0, n, (N,))


@pytest.mark.parametrize("method", METHODS)
def test_row05_nan_weight_row_every_path_as_torch(method):
    """Before: full 6/6 rows NaN, lsh 1/6, faiss 0/6 (the index hid the NaN class)."""
    W, h, y = _nan_weight_problem()
    assert F.cross_entropy(h @ W.T, y, reduction="none").isnan().all()  # torch's rule
    loss = sampled_softmax_cross_entropy(
        h, W, y, method=method, num_candidates=16, num_uniform=16, reduction="none"
    )
    assert loss.isnan().all()
    with pytest.raises(ValueError, match="weight contains NaN or inf at row 17"):
        sampled_softmax_cross_entropy(h, W, y, method=method, validate=True)


@pytest.mark.parametrize("where", ["weight", "hidden"])
@pytest.mark.parametrize("method", METHODS)
def test_row05_inf_inputs_nan_rows_as_torch(method, where):
    """A +inf logit makes a row NaN in torch (log_softmax: z - max, max = +inf). Before: +inf
    on every path; and the sampled paths saw a +inf class row only if they retrieved it."""
    torch.manual_seed(0)
    n, d, N = 300, 8, 6
    W, h, y = torch.randn(n, d), torch.randn(N, d), torch.randint(0, n, (N,))
    if where == "weight":
        W[17, 0] = float("inf")
    else:
        h[1, 0] = float("inf")
    ref = F.cross_entropy(h @ W.T, y, reduction="none")
    loss = sampled_softmax_cross_entropy(
        h, W, y, method=method, num_candidates=16, num_uniform=16, reduction="none"
    )
    assert ref.isnan().any() and not ref.isnan().all()
    assert torch.equal(loss.isnan(), ref.isnan())
    assert torch.isfinite(loss[~ref.isnan()]).all()


@pytest.mark.parametrize(
    "scheme,impl",
    [("per_example", "auto"), ("shared_samples", "auto"), ("batch_union", "auto")]
    + [("bucket_shared", "gather"), ("bucket_shared", "tiles")],
)
@pytest.mark.parametrize("method", ["lsh", "faiss"])
def test_row05_nan_weight_row_every_scheme(method, scheme, impl):
    """Before: the module's sampled schemes gave NaN only where a candidate hit class 17."""
    if method == "faiss" and scheme == "bucket_shared":
        pytest.skip("bucket_shared needs the lsh index")
    W, h, y = _nan_weight_problem()
    layer = SampledSoftmaxLoss(
        300,
        8,
        method=method,
        num_candidates=16,
        num_uniform=16,
        candidate_scheme=scheme,
        bucket_impl=impl,
        reduction="none",
        lsh_bits=4,
    )
    with torch.no_grad():
        layer.weight.copy_(W)
    assert layer(h, y).isnan().all()
    with torch.no_grad():
        layer.weight[17] = 0.0
    layer.refresh()  # a build on finite weights: back to finite losses
    assert torch.isfinite(layer(h, y)).all()


def test_row06_faiss_one_candidate():
    """Before: a bare AssertionError from faiss (asked for k = 0)."""
    torch.manual_seed(0)
    h, W, y = torch.randn(4, 8), torch.randn(100, 8), torch.randint(0, 100, (4,))
    kw = dict(num_candidates=1, num_uniform=8, reduction="none")
    got = sampled_softmax_cross_entropy(h, W, y, method="faiss", generator=_gen(), **kw)
    same = sampled_softmax_cross_entropy(h, W, y, method="lsh", generator=_gen(), **kw)
    torch.testing.assert_close(got, same, atol=0, rtol=0)  # S = {target} on both


def test_row07_weight_sampler_beyond_2_24_classes():
    """Before: RuntimeError 'number of categories cannot exceed 2^24' (torch.multinomial)."""
    n = (1 << 24) + 1
    w = torch.ones(n)
    w[-1] = float(n - 1)  # half the mass on the last class, beyond multinomial's limit
    q = make_sampler(w, n)
    draws = q.sample((4000,), generator=_gen())
    frac_last = float((draws == n - 1).float().mean())
    assert abs(frac_last - 0.5) < 0.05
    assert float(q.log_q(torch.tensor([n - 1]))) == pytest.approx(math.log(0.5), abs=1e-12)
    W = torch.zeros(n, 2)
    h, y = torch.randn(2, 2), torch.tensor([0, n - 1])
    loss = sampled_softmax_from_candidates(
        h, W, y, torch.full((2, 1), 5), num_uniform=8, sampler=w, generator=_gen()
    )
    assert torch.isfinite(loss)


def test_row08_failed_load_state_dict_changes_nothing():
    """Before: the size mismatch raised, but steps and seed were already overwritten."""
    src = SampledSoftmaxLoss(100, 8, method="lsh", seed=3)
    src.steps = 11
    dst = SampledSoftmaxLoss(50, 8, method="lsh", seed=5)
    dst.steps, dst.manager.refresh_count = 7, 2  # refresh_count: read-only, the manager's
    with pytest.raises(RuntimeError, match="size mismatch"):
        dst.load_state_dict(src.state_dict())
    assert (dst.steps, dst.seed, dst.refresh_count) == (7, 5, 2)
    ok = SampledSoftmaxLoss(100, 8, method="lsh", seed=9)
    ok.load_state_dict(src.state_dict())  # a good load still loads the counters
    assert (ok.steps, ok.seed) == (11, 3)


@pytest.mark.parametrize("rows", [120, 80])
def test_row09_weight_data_replaced_by_another_size(rows):
    """Before: 120 rows: silent (num_classes and the index stale); 80 rows: IndexError."""
    layer = SampledSoftmaxLoss(100, 8, method="lsh", num_candidates=8, num_uniform=8)
    layer(torch.randn(4, 8), torch.randint(0, 80, (4,)))
    layer.weight.data = torch.randn(rows, 8)
    with pytest.raises(ValueError, match=rf"built for weight \(100, 8\).*\({rows}, 8\)"):
        layer(torch.randn(4, 8), torch.randint(0, 80, (4,)))
    with pytest.raises(ValueError, match="another size"):
        layer.topk(torch.randn(4, 8), 3)


@pytest.mark.parametrize(
    "case,match",
    [("bias", "bias must be 1-D of length n=50"), ("low", "found -1"), ("high", "found 50")],
)
def test_row10_explicit_candidates_validate_inputs(case, match):
    """Before: a bias of length n + 5 was accepted silently; target -1 or n: IndexError."""
    torch.manual_seed(0)
    n = 50
    h, W = torch.randn(3, 8), torch.randn(n, 8)
    ret = torch.randint(0, n, (3, 4))
    y = torch.tensor([-1 if case == "low" else n if case == "high" else 1, 2, 3])
    bias = torch.zeros(n + 5) if case == "bias" else None
    with pytest.raises(ValueError, match=match):
        sampled_softmax_from_candidates(h, W, y, ret, bias, num_uniform=4)


def test_row11_num_uniform_zero_warns_and_explains(monkeypatch):
    """Before: silently a softmax over S only; no warning, explain() said nothing."""
    monkeypatch.setattr(Fn, "_WARNED_NO_UNIFORM", False)
    layer = SampledSoftmaxLoss(1000, 8, method="lsh", num_candidates=8, num_uniform=0)
    assert "not an estimate of the full loss" in layer.explain()
    with pytest.warns(UserWarning, match="num_uniform=0"):
        layer(torch.randn(4, 8), torch.randint(0, 1000, (4,)))
    assert "num_uniform=0" in sampled_softmax_from_candidates.__doc__
    full = SampledSoftmaxLoss(1000, 8, method="lsh", num_candidates=8, num_uniform=4)
    assert "num_uniform=0" not in full.explain()


def _huge_logits():
    torch.manual_seed(0)
    h = torch.randn(1, 64) * 1.25e14
    W = torch.randn(64, 64) * 1.25e14
    W[0] = h[0]  # logits ~1e30 and the target's the largest by ~1e29: torch's loss is 0
    return h, W, torch.tensor([0])


@pytest.mark.parametrize("method", METHODS)
def test_row12_float32_logits_near_1e30(method):
    """Before: loss -7.6e22 where torch gives 0 (the target logit was a separate reduction
    from the logits the LSE summed, off by ulps of 1e30)."""
    h, W, y = _huge_logits()
    ref = F.cross_entropy(h @ W.T, y)
    got = sampled_softmax_cross_entropy(h, W, y, method=method, num_candidates=4, num_uniform=4)
    assert float(ref) == 0.0 and abs(float(got)) <= 1e-6


def test_row12_sampled_logits_kernel_near_1e30():
    """The Triton forward kernel (interpreter on CPU) reads the target's logit from its
    candidate slot too. (Before the fix this one passed by luck: the kernel's two dot
    products reduce in the same order; kept so a change there cannot bring the bug back.)"""
    from triton_softmax.kernels import sampled_logits_fwd

    h, W, y = _huge_logits()
    ids = torch.arange(8).unsqueeze(0)
    loss, lse = sampled_logits_fwd(h, W, None, ids, torch.zeros(1, 8), y)
    assert float(loss) == 0.0 and torch.isfinite(lse).all()


def test_row13_numpy_ignore_index_and_full_label_smoothing():
    """Before: ValueError for ignore_index=np.int64(-100) and for label_smoothing=1.0."""
    torch.manual_seed(0)
    h, W, y = torch.randn(3, 4), torch.randn(10, 4), torch.tensor([1, -100, 3])
    got = sampled_softmax_cross_entropy(
        h, W, y, method="full", ignore_index=np.int64(-100), label_smoothing=1.0
    )
    ref = F.cross_entropy(h @ W.T, y, ignore_index=-100, label_smoothing=1.0)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    layer = SampledSoftmaxLoss(10, 4, method="full", ignore_index=np.int32(-1))
    assert type(layer.ignore_index) is int and layer.ignore_index == -1


_THREADS = """
import faiss  # imported first, faiss-cpu loads its own OpenMP runtime, not torch's
import torch
from triton_softmax import sampled_softmax_cross_entropy
torch.set_num_threads(1)
h, W, y = torch.randn(4, 8), torch.randn(100, 8), torch.randint(0, 100, (4,))
sampled_softmax_cross_entropy(h, W, y, method="faiss", num_candidates=8, num_uniform=8)
print(faiss.omp_get_max_threads())
"""


def test_row14_faiss_threads_follow_torch():
    """Before: FAISS kept its own OpenMP pool (every core: 2 here) after
    torch.set_num_threads(1). (On a 1-core machine this could not fail before.)"""
    pytest.importorskip("faiss")
    out = subprocess.run(
        [sys.executable, "-c", _THREADS], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert int(out.stdout.split()[-1]) == 1


def test_row15_faiss_nlist_docstring_matches_default_nlist():
    """Before: the docstring said 'nlist default ~4 sqrt(n)'; default_nlist gives ~sqrt(n)."""
    from triton_softmax.faiss_index import FaissIndex, default_nlist

    assert "4 sqrt" not in FaissIndex.__doc__
    assert "default_nlist(n): about sqrt(n)" in " ".join(FaissIndex.__doc__.split())
    assert abs(default_nlist(117_659) - math.sqrt(117_659)) < 0.05 * math.sqrt(117_659)
