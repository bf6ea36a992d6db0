"""options.py and the module's option-object constructor; sharding as an option; the index
protocol; the routing table's fallback rules; the old import paths."""

import dataclasses
import importlib
import inspect

import pytest
import torch

import triton_softmax
from triton_softmax import (
    DriftOptions,
    FaissIndex,
    GradOptions,
    IndexOptions,
    LossOptions,
    LSHIndex,
    SampledSoftmaxLoss,
    SamplingOptions,
    ShardedSampledSoftmaxLoss,
    ShardSpec,
    faiss_available,
    ops,
)
from triton_softmax.index.base import CandidateIndex
from triton_softmax.options import FLAT_KWARGS


def test_options_are_frozen_hashable_and_equal_by_value():
    a, b = IndexOptions(method="lsh", lsh_tables=4), IndexOptions(method="lsh", lsh_tables=4)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.method = "faiss"
    assert IndexOptions(method="faiss") != a
    w = torch.rand(10)
    s = SamplingOptions(sampler=w)  # a weight tensor becomes a (hashable) Sampler
    assert hash(s) == hash(s) and not isinstance(s.sampler, torch.Tensor)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: LossOptions(reduction="avg"), "reduction"),
        (lambda: LossOptions(label_smoothing=1.5), "label_smoothing"),
        (lambda: LossOptions(ignore_index=1.0), "ignore_index"),
        (lambda: LossOptions(z_loss=-1.0), "z_loss"),
        (lambda: LossOptions(softcap=True), "softcap"),
        (lambda: SamplingOptions(num_candidates=0), "num_candidates"),
        (lambda: SamplingOptions(scheme="nope"), "candidate_scheme"),
        (lambda: SamplingOptions(sampler="zipf"), "sampler"),
        (lambda: IndexOptions(method="annoy"), "method"),
        (lambda: IndexOptions(lsh_bits=30), "lsh_bits"),
        (lambda: DriftOptions(every=0), "drift_every"),
        (lambda: DriftOptions(refresh_drift=0.0), "refresh_drift"),
    ],
)
def test_options_validate_themselves_naming_the_option(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_loss_options_take_numpy_ignore_index_and_full_smoothing():
    """Any integer ignore_index (numpy's too, stored as a Python int), and
    label_smoothing = 1 (torch accepts it: the loss is then the uniform-target term)."""
    import numpy as np

    opts = LossOptions(ignore_index=np.int64(-1), label_smoothing=1.0)
    assert opts.ignore_index == -1 and type(opts.ignore_index) is int
    assert opts == LossOptions(ignore_index=-1, label_smoothing=1.0)


def test_constructor_takes_at_most_12_parameters_given_option_objects():
    params = inspect.signature(SampledSoftmaxLoss).parameters.values()
    named = [p for p in params if p.kind != inspect.Parameter.VAR_KEYWORD]
    assert len(named) <= 12, [p.name for p in named]


def test_option_objects_and_flat_keywords_build_the_same_module():
    flat = dict(
        method="lsh",
        num_candidates=16,
        num_uniform=8,
        lsh_tables=3,
        sparse_grad=True,
        z_loss=1e-3,
        seed=4,
        refresh_every=2,
    )
    torch.manual_seed(0)
    a = SampledSoftmaxLoss(200, 8, **flat)
    torch.manual_seed(0)
    b = SampledSoftmaxLoss(
        200,
        8,
        loss=LossOptions(z_loss=1e-3),
        sampling=SamplingOptions(num_candidates=16, num_uniform=8),
        index=IndexOptions(method="lsh", lsh_tables=3, seed=4, refresh_every=2),
        grad=GradOptions(sparse=True),
    )
    assert (a.loss_options, a.sampling_options, a.index_options, a.grad_options) == (
        b.loss_options,
        b.sampling_options,
        b.index_options,
        b.grad_options,
    )
    h, y = torch.randn(6, 8), torch.randint(0, 200, (6,))
    for _ in range(3):
        torch.testing.assert_close(a(h, y), b(h, y), rtol=0, atol=0)
    assert a.method == "lsh" and a.num_candidates == 16 and a.sparse_grad and a.seed == 4


def test_flat_keyword_overrides_a_field_and_unknown_keywords_raise():
    given = SamplingOptions(num_uniform=3, scheme="per_example")  # auto would size |T|
    m = SampledSoftmaxLoss(50, 4, sampling=given, num_candidates=7)
    assert (m.num_candidates, m.num_uniform) == (7, 3)
    with pytest.raises(TypeError, match="num_candidate"):
        SampledSoftmaxLoss(50, 4, num_candidate=7)
    with pytest.raises(TypeError, match="LossOptions"):
        SampledSoftmaxLoss(50, 4, loss=IndexOptions())
    m.reduction = "sum"  # setting an old attribute replaces the option object, validated
    assert m.loss_options.reduction == "sum"
    with pytest.raises(ValueError, match="reduction"):
        m.reduction = "avg"


def test_every_flat_keyword_is_an_attribute():
    m = SampledSoftmaxLoss(50, 4)
    for key, (group, field) in FLAT_KWARGS.items():
        if group != "shard":
            assert getattr(m, key) == getattr(getattr(m, f"{group}_options"), field), key


@pytest.mark.parametrize(
    "option",
    [
        dict(z_loss=0.1),
        dict(softcap=5.0),
        dict(candidate_scheme="shared_samples"),
        dict(sampler="log_uniform"),
        dict(drift_every=2),
    ],
)
def test_sharding_refuses_an_option_it_cannot_honour_by_name(option):
    (name,) = option
    name = {"candidate_scheme": "candidate_scheme"}.get(name, name)
    with pytest.raises(ValueError, match=f"{name} cannot be used with a shard spec"):
        SampledSoftmaxLoss(100, 4, shard=ShardSpec(), **option)
    with pytest.raises(ValueError, match=name):
        ShardedSampledSoftmaxLoss(100, 4, **option)


@pytest.mark.parametrize("method", ["full", "lsh"])
def test_shard_spec_on_the_module_is_the_sharded_module(method):
    kw = dict(method=method, num_candidates=8, num_uniform=4, seed=3, lsh_tables=2)
    a = SampledSoftmaxLoss(120, 6, shard=ShardSpec(), **kw)
    b = ShardedSampledSoftmaxLoss(120, 6, **kw)
    assert a.shard == b.shard == (0, 120) and a.world_size == 1
    assert torch.equal(a.weight, b.weight)
    h, y = torch.randn(5, 6), torch.randint(0, 120, (5,))
    y[1] = -100
    torch.testing.assert_close(a(h, y), b(h, y), rtol=0, atol=0)
    assert a.stats()["comm_calls"] == 0  # no process group: no collective


def test_sharded_module_now_takes_validate_and_label_smoothing():
    m = ShardedSampledSoftmaxLoss(40, 4, method="full", validate=True, label_smoothing=0.1)
    h, y = torch.randn(3, 4), torch.randint(0, 40, (3,))
    ref = torch.nn.functional.cross_entropy(h @ m.weight.T, y, label_smoothing=0.1)
    torch.testing.assert_close(m(h, y).float(), ref, rtol=1e-5, atol=1e-5)
    h[0, 0] = float("nan")
    with pytest.raises(ValueError, match="hidden"):
        m(h, y)


def test_indexes_implement_the_protocol():
    w = torch.randn(64, 8)
    lsh = LSHIndex(8, 3, 2, seed=1).build(w)
    assert isinstance(lsh, CandidateIndex)
    h = torch.randn(4, 8)
    assert torch.equal(lsh.union(h), lsh.search_union(h))
    assert lsh.update_rows(w, None, torch.tensor([0, 5]))
    state = lsh.state_dict()
    again = LSHIndex(state["dim"], state["num_bits"], state["num_tables"], seed=state["seed"])
    assert torch.equal(again.build(w).search(h, 6), lsh.search(h, 6))
    if faiss_available():
        f = FaissIndex("flat").build(w)
        assert isinstance(f, CandidateIndex)
        assert not f.update_rows(w, None, torch.tensor([0]))
        assert f.state_dict()["kind"] == "flat"
        with pytest.raises(NotImplementedError, match="bucket_shared"):
            f.union(h)


def test_routing_table_runs_the_twin_for_float64_and_softcap(monkeypatch):
    """Under TRITON_SOFTMAX_IMPL=triton the launchers run, except where a route's fallback
    rule (float64) or the softcap says the kernel does not apply."""
    import triton_softmax.kernels as kernels

    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")
    calls = []
    for name in ("linear_ce_chunked_fwd", "sampled_logits_fwd"):  # the exact path's default
        launcher = getattr(kernels, name)
        monkeypatch.setattr(
            kernels, name, lambda *a, _f=launcher, _n=name, **k: (calls.append(_n), _f(*a, **k))[1]
        )
    g = torch.Generator().manual_seed(0)
    h, W = torch.randn(3, 8, generator=g), torch.randn(20, 8, generator=g)
    y = torch.randint(0, 20, (3,), generator=g)
    ops.linear_ce_fwd(h, W, None, y)
    assert calls == ["linear_ce_chunked_fwd"]
    loss64, _ = ops.linear_ce_fwd(h.double(), W.double(), None, y)
    capped, _ = ops.linear_ce_fwd(h, W, None, y, 0.0, softcap=2.0)
    ids, logw = torch.randint(0, 20, (3, 4), generator=g), torch.zeros(3, 4)
    ops.sampled_logits_fwd(h, W, None, ids, logw, y, softcap=2.0)
    assert calls == ["linear_ce_chunked_fwd"] and loss64.dtype == torch.float64
    ref = torch.nn.functional.cross_entropy(2.0 * torch.tanh(h @ W.T / 2.0), y, reduction="none")
    torch.testing.assert_close(capped, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "old, new",
    [
        ("lsh", "index.simhash"),
        ("faiss_index", "index.faiss"),
        ("estimator", "reference.sampled_logits"),
        ("full", "reference.linear_ce"),
        ("bucket_tiles", "bucket_shared"),
    ],
)
def test_old_module_paths_are_the_moved_modules(old, new):
    assert importlib.import_module(f"triton_softmax.{old}") is importlib.import_module(
        f"triton_softmax.{new}"
    )
    assert getattr(triton_softmax, old) is importlib.import_module(f"triton_softmax.{new}")


def test_old_names_still_import():
    from triton_softmax.bucket_tiles import bucket_tile_loss, bucket_tile_lse_ref  # noqa: F401
    from triton_softmax.distributed import ShardedSampledSoftmaxLoss as S
    from triton_softmax.loss import exact_topk, make_index, recall_at_k  # noqa: F401
    from triton_softmax.lsh import LSHIndex as L
    from triton_softmax.lsh import simhash_codes_ref  # noqa: F401

    assert S is ShardedSampledSoftmaxLoss and L is LSHIndex
    assert ops.chunked_ce_fwd is ops.linear_ce_fwd
    for name in triton_softmax.__all__:
        assert getattr(triton_softmax, name) is not None


def test_default_candidate_scheme_is_a_shared_t_sized_for_coverage():
    """auto -> shared_samples with |T| = max(|T|, min(1024, n // 8)) since 2026-12-07 (its
    P@1 led per-example T at fixed budgets: options.SamplingOptions.resolved); per_example
    where only it runs (softcap, sharded); num_uniform=0 stays 0."""
    kw = dict(method="uniform", num_candidates=4, num_uniform=8)
    for n, size in ((50, 8), (4000, 500), (10**5, 1024)):
        so = SampledSoftmaxLoss(n, 4, **kw).sampling_options
        assert (so.scheme, so.num_shared_columns) == ("shared_samples", size), (n, so)
        # a quarter of the columns an exact head of the most frequent targets
        assert (so.sampler, so.num_head) == ("frequency", size // 4), (n, so)
    big = SampledSoftmaxLoss(10**5, 4, method="uniform", num_uniform=2048).sampling_options
    assert big.num_shared_columns == 2048  # a larger asked |T| is kept
    none = SampledSoftmaxLoss(10**5, 4, method="uniform", num_uniform=0).sampling_options
    assert (none.num_uniform, none.num_head, none.sampler) == (0, 0, "uniform")
    # an explicit proposal stays, with no head
    flat = SampledSoftmaxLoss(10**5, 4, method="uniform", sampler="uniform").sampling_options
    assert (flat.scheme, flat.sampler, flat.num_head, flat.num_uniform) == (
        "shared_samples",
        "uniform",
        0,
        1024,
    )
    assert SampledSoftmaxLoss(50, 4, softcap=5.0, **kw).sampling_options.scheme == "per_example"
    sharded = SampledSoftmaxLoss(50, 4, shard=ShardSpec(), num_candidates=4, num_uniform=8)
    assert sharded.sampling_options.scheme == "per_example"
    # an explicit scheme stays, with the asked |T|, and a wrong one names the choices
    explicit = SampledSoftmaxLoss(50, 4, candidate_scheme="per_example", **kw)
    assert (explicit.sampling_options.scheme, explicit.num_uniform) == ("per_example", 8)
    with pytest.raises(ValueError, match="'auto' or one of"):
        SampledSoftmaxLoss(50, 4, candidate_scheme="shared", **kw)
