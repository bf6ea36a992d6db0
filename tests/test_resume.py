"""Resume: train k steps, save, load into a fresh module, continue; the losses equal the
uninterrupted run's bitwise, for checkpoints before the first step, at a refresh step and
between refreshes, on every method, lsh generator and candidate scheme. The checkpoint holds
the index as the last refresh built it (index.base.Snapshot), so the resumed run searches the
same index and refreshes at the same steps (0, R, 2R, ...)."""

import io

import pytest
import torch

from triton_softmax import SampledSoftmaxLoss

N_CLASSES, DIM, BATCH, EVERY, STEPS = 300, 8, 6, 3, 8
LSH = [
    dict(method="lsh", lsh_generator=g, candidate_scheme=s)
    for g in ("clusters", "tables")
    for s in ("per_example", "shared_samples", "batch_union")
] + [
    dict(method="lsh", candidate_scheme="bucket_shared", bucket_impl=impl)
    for impl in ("tiles", "gather")
]
CONFIGS = (
    [dict(method="full"), dict(method="uniform")]
    + [dict(method="faiss", candidate_scheme=s) for s in ("per_example", "shared_samples")]
    + LSH
    + [
        dict(method="lsh", lsh_generator="clusters", partial_refresh=True, sparse_grad=True),
        dict(method="lsh", lsh_generator="tables", partial_refresh=True, sparse_grad=True),
        dict(method="lsh", lsh_generator="clusters", target_mass=0.5),  # nprobe tuned
        dict(method="faiss", faiss_index="ivf", faiss_nlist=8, target_mass=0.5),
        dict(method="lsh", lsh_generator="clusters", search_min_mass=0.05),
        dict(method="lsh", lsh_generator="tables", refresh_drift=0.01, drift_check_every=1),
    ]
)


def _make(kw: dict, seed: int = 3) -> SampledSoftmaxLoss:
    torch.manual_seed(0)
    return SampledSoftmaxLoss(
        N_CLASSES,
        DIM,
        bias=True,
        num_candidates=12,
        num_uniform=5,
        refresh_every=EVERY,
        seed=seed,
        **kw,
    )


def _batches():
    gen = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(BATCH, DIM, generator=gen),
            torch.randint(0, N_CLASSES, (BATCH,), generator=gen),
        )
        for _ in range(STEPS)
    ]


def _step(layer, opt, h, y) -> torch.Tensor:
    opt.zero_grad()
    loss = layer(h, y)
    loss.backward()
    opt.step()
    return loss.detach()


def _optimizer(layer):
    return torch.optim.SGD(layer.parameters(), lr=0.5)


def _name(kw):
    return "-".join(str(v) for v in kw.values())


@pytest.mark.parametrize("kw", CONFIGS, ids=_name)
def test_resume_repeats_the_uninterrupted_run_bitwise(kw):
    batches = _batches()
    ref = _make(kw)
    opt = _optimizer(ref)
    states, losses, refreshed = {}, [], []
    for i, (h, y) in enumerate(batches):
        buf = io.BytesIO()
        torch.save(ref.state_dict(), buf)  # before step i (torch.save: a real round trip)
        states[i] = buf.getvalue()
        losses.append(_step(ref, opt, h, y))
        refreshed.append(ref.steps_at_refresh)
    if kw["method"] not in ("full", "uniform") and "refresh_drift" not in kw:
        assert refreshed == [0, 0, 0, 3, 3, 3, 6, 6], refreshed  # the schedule itself
    # 0: before any step; 3, 6: at a refresh step; 4, 5, 7: between refreshes
    for k in (0, 3, 4, 5, 7):
        resumed = _make(kw, seed=11)  # another seed: the checkpoint's is taken
        resumed.load_state_dict(torch.load(io.BytesIO(states[k]), weights_only=True))
        opt = _optimizer(resumed)
        for i in range(k, STEPS):
            got = _step(resumed, opt, *batches[i])
            assert torch.equal(got, losses[i]), (k, i, float(got), float(losses[i]))
            if kw["method"] not in ("full", "uniform"):
                assert resumed.steps_at_refresh == refreshed[i], (k, i)
        # the counters and the last quality measurement (target_mass) as the run's
        assert resumed.refresh_count == ref.refresh_count, k
        got, want = resumed.stats().get("captured_mass"), ref.stats().get("captured_mass")
        assert got == want or (got != got and want != want), (k, got, want)


def _trained(steps: int, **kw) -> SampledSoftmaxLoss:
    layer = _make(dict(dict(method="lsh"), **kw))
    opt = _optimizer(layer)
    for h, y in _batches()[:steps]:
        _step(layer, opt, h, y)
    return layer


@pytest.mark.parametrize("method", ["lsh", "faiss"])
def test_refresh_schedule_after_load_is_the_uninterrupted_one(method):
    """Before 2026-12-07 the first build after a load took the saved steps_at_refresh even
    when it was the due refresh itself: a checkpoint before the first step refreshed at
    0, 1, 4, 7 and one taken when the step-6 refresh was due at 6, 7 (not 0, 3, 6 / 6)."""
    batches = _batches()
    for k in range(STEPS):
        layer = _trained(k, method=method, search_min_mass=None)
        resumed = _make(dict(method=method, search_min_mass=None))
        resumed.load_state_dict(layer.state_dict())
        opt, refreshed = _optimizer(resumed), []
        for i in range(k, STEPS):
            before = resumed.refresh_count
            _step(resumed, opt, *batches[i])
            if resumed.refresh_count > before:
                refreshed.append(i)
        assert refreshed == [i for i in (0, 3, 6) if i >= k], (k, refreshed)


@pytest.mark.parametrize(
    "other", [dict(method="faiss"), dict(method="lsh", lsh_generator="tables"), dict(method="full")]
)
def test_checkpoint_of_another_index_kind_raises_at_load_and_changes_nothing(other):
    """Before: a clusters checkpoint loaded into a faiss or SimHash-tables module without error, and
    the next forward raised AttributeError. A module with no index (full) ignores it."""
    src = _trained(4, lsh_generator="clusters", search_min_mass=None)
    dst = _trained(2, **other, search_min_mass=None if other["method"] != "full" else "auto")
    before = (dst.steps, dst.seed, dst.steps_at_refresh, dst.index, dst.weight.clone())
    if other["method"] == "full":
        dst.load_state_dict(src.state_dict())
        assert dst.steps == 4
        return
    with pytest.raises(ValueError, match=r"lsh index \(clusters\).*builds a"):
        dst.load_state_dict(src.state_dict())
    after = (dst.steps, dst.seed, dst.steps_at_refresh, dst.index, dst.weight)
    assert before[:4] == after[:4] and torch.equal(before[4], after[4])
    h, y = _batches()[0]
    dst(h, y)  # and it still runs


@pytest.mark.parametrize("src_bias", [True, False])
def test_failed_strict_load_on_keys_changes_nothing(src_bias):
    """Before: a strict load that failed on a missing or unexpected key (bias vs no bias)
    raised, but steps, seed, schedule and index were already replaced."""
    kw = dict(
        method="lsh", search_min_mass=None, num_candidates=12, num_uniform=5, refresh_every=EVERY
    )
    src = SampledSoftmaxLoss(N_CLASSES, DIM, bias=src_bias, seed=1, **kw)
    dst = SampledSoftmaxLoss(N_CLASSES, DIM, bias=not src_bias, seed=7, **kw)
    opt = _optimizer(dst)
    for h, y in _batches()[:3]:
        _step(dst, opt, h, y)
    index, weight = dst.index, dst.weight.clone()
    with pytest.raises(RuntimeError, match="Missing key|Unexpected key"):
        dst.load_state_dict(src.state_dict())
    assert (dst.steps, dst.seed, dst.steps_at_refresh) == (3, 7, 0)
    assert dst.index is index and index.built and torch.equal(dst.weight, weight)
    dst.load_state_dict(src.state_dict(), strict=False)  # non-strict: the common keys load
    assert (dst.steps, dst.seed) == (0, 1)


@pytest.mark.parametrize("field,value", [("lsh_tables", 4), ("lsh_bits", 5)])
def test_checkpoint_lsh_settings_must_match(field, value):
    """Before: load_state_dict silently replaced the module's lsh_tables / lsh_bits."""
    src = _trained(0, lsh_generator="tables")
    dst = _make(dict(method="lsh", lsh_generator="tables", **{field: value}))
    with pytest.raises(ValueError, match=f"checkpoint has {field}="):
        dst.load_state_dict(src.state_dict())
    assert getattr(dst, field) == value and dst.steps == 0
