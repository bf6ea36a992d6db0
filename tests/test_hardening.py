"""Misuse, state, determinism and memory guarantees of the module and functional API."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from triton_softmax import SampledSoftmaxLoss


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_classes=0, dim=4), "num_classes"),
        (dict(num_classes=10, dim=-1), "dim"),
        (dict(num_classes=10, dim=4, num_candidates=0), "num_candidates"),
        (dict(num_classes=10, dim=4, num_uniform=-3), "num_uniform"),
        (dict(num_classes=10, dim=4, lsh_tables=0), "lsh_tables"),
        (dict(num_classes=10, dim=4, lsh_bits=0), "lsh_bits"),
        (dict(num_classes=10, dim=4, refresh_every=0), "refresh_every"),
        (dict(num_classes=10, dim=4, method="sampled"), "method"),
        (dict(num_classes=10, dim=4, reduction="avg"), "reduction"),
        (dict(num_classes=10, dim=4, faiss_index="hnsw"), "faiss_index"),
        (dict(num_classes=10), "give num_classes and dim"),
        (dict(weight=torch.nn.Parameter(torch.randn(5, 3)), num_classes=6), "num_classes=6"),
    ],
)
def test_module_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SampledSoftmaxLoss(**kwargs)


def test_module_rejects_bad_inputs_before_any_work():
    layer = SampledSoftmaxLoss(100, 8, method="lsh", num_candidates=8, num_uniform=8)
    with pytest.raises(ValueError, match="disagree on d"):
        layer(torch.randn(4, 7), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, n=100\)"):
        layer(torch.randn(4, 8), torch.tensor([0, 1, 100, 2]))
    assert layer.index is None and layer.refresh_count == 0  # nothing was built


@pytest.mark.parametrize("method", ["full", "lsh", "faiss"])
def test_fixed_seed_runs_are_bit_identical(method):
    def run():
        torch.manual_seed(0)
        layer = SampledSoftmaxLoss(
            3000,
            16,
            method=method,
            num_candidates=32,
            num_uniform=32,
            seed=3,
            deterministic=True,
            refresh_every=2,
        )
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(4):
            h, y = torch.randn(16, 16, generator=g), torch.randint(0, 3000, (16,), generator=g)
            opt.zero_grad()
            loss = layer(h, y)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return torch.stack(losses), layer.weight.detach().clone()

    (l1, w1), (l2, w2) = run(), run()
    assert torch.equal(l1, l2) and torch.equal(w1, w2)


@pytest.mark.parametrize("method", ["lsh", "faiss"])
def test_sampled_step_allocates_no_n_sized_temporaries(method):
    """With the sparse gradient, no op in a training step allocates O(n d) or O(N n) bytes.

    n d fp32 = 16 MB and N n fp32 = 64 MB here; every allocation must stay far below both
    (the step's own tensors are O(N (|S| + |T|) d) = 0.5 MB). The lsh path's clusters search
    holds the exact scores of each query's probed lists, N x nprobe x (largest list) fp32 =
    O(N sqrt(n)), 2.5 MB here: that buffer may be the largest, and it stays below n d / 4."""
    n, d, N = 250_000, 16, 64
    layer = SampledSoftmaxLoss(
        n,
        d,
        method=method,
        num_candidates=64,
        num_uniform=64,
        sparse_grad=True,
        refresh_every=1000,
        search_min_mass=None,  # the searching step is what is measured
    )
    h, y = torch.randn(N, d), torch.randint(0, n, (N,))
    layer(h, y).backward()  # builds the index (a refresh: O(n d) by design, reported apart)
    layer.weight.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        layer(h, y).backward()
    biggest = max(e.cpu_memory_usage for e in prof.events())
    bound = n * d * 4 / 8
    if method == "lsh":
        index = layer.index
        search_scores = N * index.effective_nprobe * index.max_list * 4
        assert search_scores < n * d * 4 / 4
        bound = max(bound, search_scores)
    assert biggest <= bound, biggest


def test_refresh_count_survives_checkpoint_and_schedule_continues():
    kw = dict(method="lsh", search_min_mass=None, num_candidates=16, num_uniform=8, refresh_every=4)
    a = SampledSoftmaxLoss(1000, 8, **kw)
    h, y = torch.randn(4, 8), torch.randint(0, 1000, (4,))
    for _ in range(6):  # refreshes at steps 0 and 4
        a(h, y).backward()
    state = a.state_dict()
    b = SampledSoftmaxLoss(1000, 8, **kw)
    b.load_state_dict(state)
    assert b.refresh_count == 2 and b.steps == 6
    b(h, y).backward()  # rebuilds (never stale) but keeps the schedule: next refresh at 8
    assert b.steps_at_refresh == 4
    b(h, y).backward()
    b(h, y).backward()  # step 8
    assert b.steps_at_refresh == 8


@pytest.mark.cuda
def test_module_to_cuda_rebuilds_index_on_the_device():
    layer = SampledSoftmaxLoss(2000, 8, method="lsh", num_candidates=16, num_uniform=8)
    h, y = torch.randn(4, 8), torch.randint(0, 2000, (4,))
    cpu_loss = layer(h, y)
    layer.cuda()
    cuda_loss = layer(h.cuda(), y.cuda())
    index = layer.index  # the default generator: cluster lists, warm-started at the rebuild
    assert all(t.is_cuda for t in (index.centroids, index.route, index.order, index.offsets))
    assert torch.isfinite(cuda_loss)
    assert cpu_loss.shape == cuda_loss.shape


@pytest.mark.cuda
def test_cuda_target_out_of_range_is_a_device_assert_not_a_sync():
    """The range check enqueues a device-side assert; it fires at the next sync.

    Run in a child process: a device assert poisons the CUDA context of the process. A valid
    call comes first: the first launch of an autotuned kernel benchmarks its configs, which
    synchronizes (an assert enqueued before it would fire inside that call).
    """
    code = textwrap.dedent(
        """
        import torch
        from triton_softmax import sampled_softmax_cross_entropy
        W = torch.randn(10, 4, device="cuda")
        h = torch.randn(3, 4, device="cuda")
        sampled_softmax_cross_entropy(h, W, torch.tensor([1, 2, 3], device="cuda"), method="full")
        torch.cuda.synchronize()
        y = torch.tensor([1, 2, 11], device="cuda")
        loss = sampled_softmax_cross_entropy(h, W, y, method="full")
        print("returned before sync", flush=True)
        torch.cuda.synchronize()
        print("no assert")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    ok = "returned before sync" in out.stdout and "no assert" not in out.stdout
    assert ok, out.stderr[-2000:]
    assert out.returncode != 0


@pytest.mark.parametrize("method", ["lsh", "faiss"])
def test_functional_index_of_another_d_raises_before_any_search(method):
    """Before 2026-12-07: an index built for d = 8 given hidden of d = 6 raised a bare
    AssertionError deep in the search; now a ValueError naming both sizes."""
    from triton_softmax import sampled_softmax_cross_entropy
    from triton_softmax.index.factory import make_index

    if method == "faiss":
        pytest.importorskip("faiss")
    index = make_index(method, 100, 8, 16).build(torch.randn(100, 8))
    h, W, y = torch.randn(4, 6), torch.randn(100, 6), torch.randint(0, 100, (4,))
    with pytest.raises(ValueError, match="built for d=8 but hidden and weight have d=6"):
        sampled_softmax_cross_entropy(
            h, W, y, method=method, index=index, num_candidates=8, num_uniform=4
        )
