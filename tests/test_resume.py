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
    for g in ("clusters", "simhash", "tables")
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
    if kw["method"] not in ("full", "uniform"):
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
