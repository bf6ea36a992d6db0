"""Property test (hypothesis): with candidates covering every class, every path and
candidate scheme equals F.cross_entropy in float64 to 1e-12 (loss and gradients), over target
dtypes (int64, int32, uint8 where n <= 255, int16), ignore_index values, reductions, bias,
label smoothing (full path), samplers and sparse gradients.

How each path is made to cover all n classes: the explicit-candidate function gets every class
in a random order (with duplicates); faiss: a flat index's top-n; lsh: an LSHIndex whose
hyperplanes are zeroed, so every class and query share one bucket, read whole; the module's
bucket_shared scheme (gathered and tiled) scores that one bucket. T draws then all land in S
(accidental hits removed) or have an empty complement, so the estimator is the exact loss.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triton_softmax import (
    FaissIndex,
    LSHIndex,
    SampledSoftmaxLoss,
    sampled_softmax_cross_entropy,
    sampled_softmax_from_candidates,
)
from triton_softmax.faiss_index import faiss_available

TOL = dict(atol=1e-12, rtol=0, equal_nan=True)
SCHEMES = ("per_example", "shared_samples", "batch_union")
TARGET_DTYPES = (torch.int64, torch.int32, torch.uint8, torch.int16)


@st.composite
def problems(draw):
    n = draw(st.one_of(st.integers(3, 24), st.integers(157, 200)))  # uint8 labels >= 156 too
    d = draw(st.integers(1, 6))
    N = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([t for t in TARGET_DTYPES if t != torch.uint8 or n <= 255]))
    # ignore_index: torch's default, -1, or a class (its rows are ignored); uint8 labels
    # cannot hold a negative value, so no row equals a negative ignore_index there
    ignore_index = draw(st.sampled_from([-100, -1, draw(st.integers(0, n - 1))]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=g, dtype=torch.float64)
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64) if draw(st.booleans()) else None
    y = torch.randint(0, n, (N,), generator=g)
    if ignore_index < 0 and dtype != torch.uint8:
        y = torch.where(torch.rand(N, generator=g) < 0.3, torch.tensor(ignore_index), y)
    return dict(
        h=h,
        W=W,
        b=b,
        y=y.to(dtype),
        ignore_index=ignore_index,
        reduction=draw(st.sampled_from(["none", "mean", "sum"])),
        num_uniform=draw(st.integers(0, 4)),
        sampler=draw(st.sampled_from(["uniform", "log_uniform", "weights"])),
        sparse_grad=draw(st.booleans()),
        label_smoothing=draw(st.sampled_from([0.0, 0.0, 0.1, 1.0])),
        seed=seed,
    )


def _loss_and_grads(fn, p):
    params = [p["h"].clone().requires_grad_(True), p["W"].clone().requires_grad_(True)]
    if p["b"] is not None:
        params.append(p["b"].clone().requires_grad_(True))
    loss = fn(*params)
    out = loss.sum() if loss.dim() else loss
    grads = torch.autograd.grad(out, params, allow_unused=True) if out.requires_grad else ()
    grads = [g.to_dense() if g is not None and g.is_sparse else g for g in grads]
    return loss.detach(), grads


def _reference(p, label_smoothing=0.0):
    def fn(h, W, b=None):
        z = h @ W.T + (b if b is not None else 0)
        return F.cross_entropy(
            z,
            p["y"].long(),
            ignore_index=p["ignore_index"],
            reduction=p["reduction"],
            label_smoothing=label_smoothing,
        )

    return _loss_and_grads(fn, p)


def _zero_plane_lsh(p) -> LSHIndex:
    n, d = p["W"].shape
    index = LSHIndex(d, num_bits=1, num_tables=2, seed=p["seed"] % 1000, max_per_bucket=n)
    index.hyperplanes.zero_()  # every class and query: one bucket per table
    return index.build(p["W"], p["b"])


def _sampler(p):
    if p["sampler"] == "weights":
        g = torch.Generator().manual_seed(p["seed"] + 1)
        return torch.rand(p["W"].shape[0], generator=g, dtype=torch.float64) + 1e-3
    return p["sampler"]


def _explicit(p, retrieved, scheme):
    sampler = _sampler(p) if scheme != "per_example" or p["sampler"] != "uniform" else "uniform"
    if scheme == "hybrid":
        sampler = "uniform"  # its own draws are uniform over the complement of S

    def fn(h, W, b=None):
        return sampled_softmax_from_candidates(
            h,
            W,
            p["y"],
            retrieved,
            b,
            num_uniform=p["num_uniform"],
            reduction=p["reduction"],
            ignore_index=p["ignore_index"],
            sparse_grad=p["sparse_grad"] and scheme == "per_example",
            generator=torch.Generator().manual_seed(p["seed"]),
            scheme=scheme,
            sampler=sampler,
            num_shared=3,
        )

    return fn


def _module(p, method, **kw):
    n, d = p["W"].shape
    layer = SampledSoftmaxLoss(
        n,
        d,
        method=method,
        bias=p["b"] is not None,
        reduction=p["reduction"],
        ignore_index=p["ignore_index"],
        seed=p["seed"] % 1000,
        dtype=torch.float64,
        **kw,
    )
    with torch.no_grad():
        layer.weight.copy_(p["W"])
        if p["b"] is not None:
            layer.bias.copy_(p["b"])
    if method == "lsh":
        layer.refresh("lsh")
        layer.index.hyperplanes.zero_()
        layer.index.max_per_bucket = n
        layer.index.build(layer.weight, layer.bias)

    def loss_and_grads():
        h = p["h"].clone().requires_grad_(True)
        loss = layer(h, p["y"])
        params = [h, layer.weight] + ([layer.bias] if layer.bias is not None else [])
        out = loss.sum() if loss.dim() else loss
        grads = torch.autograd.grad(out, params, allow_unused=True)
        return loss.detach(), [g.to_dense() if g is not None and g.is_sparse else g for g in grads]

    return loss_and_grads


def _paths(p):
    """(name, () -> (loss, grads)) for every path and scheme, candidates covering all."""
    n, N = p["W"].shape[0], p["h"].shape[0]
    g = torch.Generator().manual_seed(p["seed"] + 2)
    perm = torch.stack([torch.randperm(n, generator=g) for _ in range(N)])
    everything = torch.cat([perm, perm[:, : n // 2]], dim=1)  # all classes, with duplicates
    retrieved = {"explicit": everything, "lsh": _zero_plane_lsh(p).search(p["h"], n)}
    if faiss_available():
        flat = FaissIndex("flat").build(p["W"], p["b"])
        retrieved["faiss"] = flat.search(p["h"], n)
    out = []
    for source, ret in retrieved.items():
        for scheme in (*SCHEMES, "hybrid"):
            fn = _explicit(p, ret, scheme)
            out.append((f"{source}/{scheme}", lambda fn=fn: _loss_and_grads(fn, p)))
    T = min(p["num_uniform"], n - 2)  # |S| + |T| < n: the dispatcher keeps the lsh path
    for impl in ("gather", "tiles"):
        if impl == "tiles" and (p["sparse_grad"] or p["sampler"] != "uniform"):
            continue
        kw = dict(
            num_candidates=1,
            num_uniform=T,
            candidate_scheme="bucket_shared",
            bucket_impl=impl,
            sampler=_sampler(p),
            sparse_grad=p["sparse_grad"] and impl == "gather",
        )
        out.append((f"module lsh/bucket_shared/{impl}", _module(p, "lsh", **kw)))
    return out


SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


def _close(name, got, ref, p):
    loss, grads = got
    ref_loss, ref_grads = ref
    torch.testing.assert_close(loss, ref_loss.to(loss.dtype), **TOL, msg=lambda m: f"{name}: {m}")
    valid = (p["y"].long() != p["ignore_index"]).any()
    if p["reduction"] == "mean" and not valid:
        return  # every row ignored: the loss is NaN as torch's; its gradient is not compared
    for a, r in zip(grads, ref_grads):
        a = torch.zeros_like(r) if a is None else a
        torch.testing.assert_close(a, r, **TOL, msg=lambda m: f"{name} grad: {m}")


@SETTINGS
@given(problems())
def test_every_path_and_scheme_is_exact_in_float64(p):
    ref = _reference(p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # num_uniform=0: the softmax-over-S warning
        for name, run in _paths(p):
            _close(name, run(), ref, p)


@SETTINGS
@given(problems())
def test_full_path_is_exact_in_float64_with_label_smoothing(p):
    ls = p["label_smoothing"]
    ref = _reference(p, ls)

    def fn(h, W, b=None):
        return sampled_softmax_cross_entropy(
            h,
            W,
            p["y"],
            b,
            method="full",
            reduction=p["reduction"],
            ignore_index=p["ignore_index"],
            label_smoothing=ls,
            sparse_grad=p["sparse_grad"],
        )

    _close("full", _loss_and_grads(fn, p), ref, p)
    module = _module(p, "full", label_smoothing=ls, sparse_grad=p["sparse_grad"])
    _close("module full", module(), ref, p)


def test_uint8_labels_above_127_and_int16_ignore_index():
    """Two fixed cases the strategy can miss: uint8 labels 128..255 (where -100 wraps to
    156) and an int16 target holding -100."""
    torch.manual_seed(0)
    n = 255
    h, W = torch.randn(4, 5, dtype=torch.float64), torch.randn(n, 5, dtype=torch.float64)
    for y in (
        torch.tensor([156, 200, 254, 0], dtype=torch.uint8),
        torch.tensor([156, -100, 3, 9], dtype=torch.int16),
    ):
        ref = F.cross_entropy(h @ W.T, y.long(), reduction="none")
        got = sampled_softmax_cross_entropy(h, W, y, method="full", reduction="none")
        torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", TARGET_DTYPES)
def test_target_dtypes_accepted(dtype):
    h, W = torch.randn(2, 3, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    y = torch.tensor([1, 9], dtype=dtype)
    got = sampled_softmax_cross_entropy(h, W, y, method="full")
    torch.testing.assert_close(got, F.cross_entropy(h @ W.T, y.long()), atol=1e-12, rtol=0)
