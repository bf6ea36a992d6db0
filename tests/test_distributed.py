"""Class-sharded softmax over torch.distributed (gloo, CPU) against the single-process one.

Spawned groups of 2 and 3 processes run many checks each (spawning is the slow part). Every
rank builds the same full inputs from fixed seeds, runs the sharded loss on its own shard,
and compares the loss (replicated) and its gradients (dh, and its own rows of dW and db) with
the single-process computation on the full weight:
  - full path: against F.cross_entropy on the full logits, in float64;
  - sampled paths: against SampledSoftmaxFunction / sampled_logits_fwd_ref on the union of
    every rank's candidates (global ids) with the same per-candidate log-weights.
A hung collective fails the test (process-group timeout, and a deadline on the spawn).
"""

from __future__ import annotations

import datetime
import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from triton_softmax.autograd import SampledSoftmaxFunction
from triton_softmax.candidates import build_candidates
from triton_softmax.distributed import (
    CommCounter,
    ShardedSampledSoftmaxLoss,
    build_shard_candidates,
    check_bounds,
    init_shard_rows,
    shard_bounds,
    sharded_cross_entropy,
    sharded_sampled_softmax_from_candidates,
    uniform_split,
)
from triton_softmax.faiss_index import faiss_available
from triton_softmax.loss import exact_topk
from triton_softmax.reference.sampled_logits import sampled_logits_fwd_ref

F64 = dict(atol=1e-10, rtol=1e-10)
IGNORE = -100
SPAWN_TIMEOUT_S = 100
PG_TIMEOUT_S = 45


# ---- helpers shared by the checks ----------------------------------------------------------
def _data(n, N, d, seed, no_target_lo=None, bias=True):
    """Full float64 inputs, identical on every rank. Targets avoid [no_target_lo, n)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
    h = torch.randn(N, d, generator=g, dtype=torch.float64)
    hi = n if no_target_lo is None else no_target_lo
    y = torch.randint(0, hi, (N,), generator=g)
    y[1] = IGNORE
    y[N - 2] = IGNORE
    gvec = torch.rand(N, generator=g, dtype=torch.float64) + 0.5
    return W, b, h, y, gvec


def _backward(loss, reduction, gvec):
    (loss * gvec).sum().backward() if reduction == "none" else loss.backward()


def _leaf(t):
    return None if t is None else t.detach().clone().requires_grad_(True)


def _close(a, b, what, **tol):
    torch.testing.assert_close(a, b, **(tol or F64), msg=lambda m: f"{what}: {m}")


def _dense(g):
    return g.to_dense() if g.is_sparse else g


def _masked_reduce(rows, y, reduction):
    valid = y != IGNORE
    rows = torch.where(valid, rows, torch.zeros_like(rows))
    if reduction == "none":
        return rows
    return rows.sum() if reduction == "sum" else rows.sum() / valid.sum()


def _uneven_bounds(n, world):
    """Explicit, deliberately lopsided shards (one of 2 classes)."""
    if world == 2:
        return [(0, 2), (2, n)]
    return [(0, n - 7), (n - 7, n - 5), (n - 5, n)]


# ---- checks (run in every rank of a spawned group) -----------------------------------------
def check_full(rank, world, group=None):
    n, N, d = 13 if world == 2 else 11, 9, 5
    for bounds in (shard_bounds(n, world), _uneven_bounds(n, world)):
        lo, hi = bounds[rank]
        for bias in (False, True):
            # the last shard holds no valid target in any row
            W, b, h, y, gvec = _data(n, N, d, seed=1 + bias, no_target_lo=bounds[-1][0], bias=bias)
            for reduction, eps in (("none", 0.0), ("mean", 0.0), ("sum", 0.0), ("mean", 0.1)):
                Wr, br, hr = _leaf(W[lo:hi]), _leaf(None if b is None else b[lo:hi]), _leaf(h)
                comm = CommCounter()
                loss = sharded_cross_entropy(
                    hr,
                    Wr,
                    y,
                    br,
                    shard=(lo, hi),
                    num_classes=n,
                    group=group,
                    reduction=reduction,
                    ignore_index=IGNORE,
                    label_smoothing=eps,
                    comm=comm,
                )
                _backward(loss, reduction, gvec)
                Wf, bf, hf = _leaf(W), _leaf(b), _leaf(h)
                logits = hf @ Wf.T + (bf if bf is not None else 0.0)
                ref = F.cross_entropy(
                    logits, y, ignore_index=IGNORE, reduction=reduction, label_smoothing=eps
                )
                _backward(ref, reduction, gvec)
                what = f"full bounds={bounds} bias={bias} {reduction} eps={eps} rank={rank}"
                _close(loss, ref, what + " loss")
                _close(hr.grad, hf.grad, what + " dh")
                _close(Wr.grad, Wf.grad[lo:hi], what + " dW rows")
                if bias:
                    _close(br.grad, bf.grad[lo:hi], what + " db rows")
                # forward: max over N + sum over (2 or 3) x N; backward: N x d
                assert comm.calls == 3
                assert comm.bytes == 8 * (N + (3 if eps else 2) * N + N * d)
    # every row ignored: nan for mean, 0 for sum (as torch)
    W, b, h, y, _ = _data(n, N, d, seed=5)
    y = torch.full_like(y, IGNORE)
    lo, hi = shard_bounds(n, world)[rank]
    for reduction in ("mean", "sum"):
        hr = _leaf(h)
        loss = sharded_cross_entropy(
            hr,
            W[lo:hi],
            y,
            b[lo:hi],
            shard=(lo, hi),
            num_classes=n,
            group=group,
            reduction=reduction,
            ignore_index=IGNORE,
        )
        loss.backward()
        ref = F.cross_entropy(h @ W.T + b, y, ignore_index=IGNORE, reduction=reduction)
        _close(loss, ref, f"all ignored {reduction}", equal_nan=True, **F64)
        assert torch.all(hr.grad == 0)


def _rank_candidates(r, bounds, y_safe, R, T, seed, cover_small=False):
    """Fixed candidates of rank r: random retrieved local ids (dupes, -1, the target)."""
    lo, hi = bounds[r]
    N = y_safe.shape[0]
    g = torch.Generator().manual_seed(seed * 100 + r)
    retrieved = torch.randint(-1, hi - lo, (N, R), generator=g)
    retrieved[:, 0] = (y_safe - lo).clamp(0, hi - lo - 1)  # the target, where owned
    if cover_small and hi - lo <= R:
        retrieved[0, : hi - lo] = torch.arange(hi - lo)  # S covers the shard: no complement
    counts = uniform_split(T, bounds)
    return build_shard_candidates(retrieved, y_safe, (lo, hi), counts[r], g)


def _union(cands, bounds):
    ids = torch.cat([c[0] + lo for c, (lo, _) in zip(cands, bounds, strict=True)], dim=1)
    logw = torch.cat([c[1] for c in cands], dim=1)
    return ids, logw


def _sampled_reference(W, b, h, y, ids, logw, reduction, gvec, sparse):
    y_safe = torch.where(y != IGNORE, y, torch.zeros_like(y))
    Wf, bf, hf = _leaf(W), _leaf(b), _leaf(h)
    rows = SampledSoftmaxFunction.apply(hf, Wf, bf, ids, logw, y_safe, sparse, False, 0.0, 0.0)
    fwd_rows, _ = sampled_logits_fwd_ref(h, W, b, ids, logw, y_safe)
    _close(rows.detach(), fwd_rows, "SampledSoftmaxFunction vs sampled_logits_fwd_ref")
    ref = _masked_reduce(rows, y, reduction)
    _backward(ref, reduction, gvec)
    return ref, hf.grad, _dense(Wf.grad), None if bf is None else _dense(bf.grad)


def check_sampled(rank, world, group=None):
    n, N, d, R = 23 if world == 2 else 19, 8, 6, 3
    cases = [  # (bounds, |T|, bias, sparse, reduction)
        (shard_bounds(n, world), 5, True, False, "mean"),
        (_uneven_bounds(n, world), 7, True, True, "none"),
        (_uneven_bounds(n, world), 0, False, False, "sum"),
        (shard_bounds(n, world), 4, False, True, "mean"),
    ]
    for i, (bounds, T, bias, sparse, reduction) in enumerate(cases):
        lo, hi = bounds[rank]
        W, b, h, y, gvec = _data(n, N, d, seed=10 + i, no_target_lo=bounds[-1][0], bias=bias)
        y_safe = torch.where(y != IGNORE, y, torch.zeros_like(y))
        cands = [
            _rank_candidates(r, bounds, y_safe, R, T, seed=i, cover_small=True)
            for r in range(world)
        ]
        ids, logw = _union(cands, bounds)
        Wr, br, hr = _leaf(W[lo:hi]), _leaf(None if b is None else b[lo:hi]), _leaf(h)
        comm = CommCounter()
        loss = sharded_sampled_softmax_from_candidates(
            hr,
            Wr,
            y,
            cands[rank][0],
            cands[rank][1],
            br,
            shard=(lo, hi),
            group=group,
            reduction=reduction,
            ignore_index=IGNORE,
            sparse_grad=sparse,
            comm=comm,
        )
        _backward(loss, reduction, gvec)
        ref, dh, dW, db = _sampled_reference(W, b, h, y, ids, logw, reduction, gvec, sparse)
        what = f"sampled case {i} bounds={bounds} T={T} rank={rank}"
        _close(loss, ref, what + " loss")
        _close(hr.grad, dh, what + " dh")
        assert Wr.grad.is_sparse == sparse
        _close(_dense(Wr.grad), dW[lo:hi], what + " dW rows")
        if bias:
            _close(_dense(br.grad), db[lo:hi], what + " db rows")
        assert comm.calls == 3 and comm.bytes == 8 * (N + 2 * N + N * d)


def _gather(obj, world, group=None):
    out = [None] * world
    dist.all_gather_object(out, obj, group=group)
    return out


def check_module(rank, world):
    n, N, d = 41, 7, 8
    W = init_shard_rows(0, n, d, seed=3, dtype=torch.float64)  # the same for any sharding
    _, _, h, y, _ = _data(n, N, d, seed=20)
    # full path: module == F.cross_entropy, weights from the shared seed
    m = ShardedSampledSoftmaxLoss(
        n, d, method="full", seed=3, dtype=torch.float64, ignore_index=IGNORE
    )
    lo, hi = m.shard
    _close(m.weight.detach(), W[lo:hi], "init_shard_rows sharding-invariant")
    hr, Wf = _leaf(h), _leaf(W)
    loss = m(hr, y)
    loss.backward()
    ref = F.cross_entropy(h @ Wf.T, y, ignore_index=IGNORE)
    ref.backward()
    _close(loss, ref, "module full loss")
    _close(m.weight.grad, Wf.grad[lo:hi], "module full dW")
    s, i = m.topk(h, 5)
    s_ref, i_ref = exact_topk(h, W, 5)
    _close(s, s_ref.float(), "topk scores", atol=1e-6, rtol=1e-6)
    assert torch.equal(i, i_ref)

    methods = ["lsh"] + (["faiss"] if faiss_available() else [])
    for method in methods:
        for sparse in (False, True):
            m = ShardedSampledSoftmaxLoss(
                n,
                d,
                method=method,
                num_candidates=4,
                num_uniform=5,
                bias=True,
                seed=3,
                refresh_every=2,
                sparse_grad=sparse,
                dtype=torch.float64,
                ignore_index=IGNORE,
                lsh_bits=2,
                lsh_tables=3,
                faiss_index="flat",
            )
            with torch.no_grad():
                m.bias.copy_(torch.linspace(-1, 1, n, dtype=torch.float64)[slice(*m.shard)])
            b_full = torch.linspace(-1, 1, n, dtype=torch.float64)
            for step in range(3):
                local = m.shard_candidates(h, y)  # what this step's forward will use
                hr = _leaf(h)
                loss = m(hr, y)
                loss.backward()
                cands = _gather((local[0], local[1]), world)
                ids, logw = _union(cands, m.bounds)
                ref, dh, dW, db = _sampled_reference(
                    W.clone(), b_full, h, y, ids, logw, "mean", None, sparse
                )
                what = f"module {method} sparse={sparse} step {step} rank {rank}"
                _close(loss, ref, what + " loss")
                _close(hr.grad, dh, what + " dh")
                assert m.weight.grad.is_sparse == sparse
                _close(_dense(m.weight.grad), dW[lo:hi], what + " dW")
                _close(_dense(m.bias.grad), db[lo:hi], what + " db")
                m.zero_grad(set_to_none=True)
            # the same refresh schedule on every rank (3 steps, refresh_every=2: 2 refreshes)
            assert _gather((m.steps, m.refresh_count), world) == [(3, 2)] * world
            if method == "lsh":
                planes = _gather(m.index.hyperplanes, world)
                assert all(torch.equal(p, planes[0]) for p in planes)
    # an fp32 module forward + backward runs and agrees with float64 on the same candidates
    m = ShardedSampledSoftmaxLoss(n, d, method="lsh", num_candidates=4, num_uniform=5, seed=3)
    loss = m(h.float(), y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(m.weight.grad).all()


def check_subgroup(rank, world):
    """Class-parallel group = ranks {0, 2} of 3 (rank 1 idle): group ranks, not global ones."""
    group = dist.new_group([0, 2])  # every rank must call new_group
    if rank != 1:
        grank = dist.get_rank(group)
        check_full(grank, 2, group=group)
        check_sampled(grank, 2, group=group)
        m = ShardedSampledSoftmaxLoss(30, 4, group=group, method="full")
        assert m.shard == shard_bounds(30, 2)[grank] and m.world_size == 2
    dist.barrier()


# ---- spawning --------------------------------------------------------------------------------
def _worker(rank, world, init_file, names):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=PG_TIMEOUT_S),
    )
    try:
        for name in names:
            globals()[name](rank, world)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(world, names, tmp_path):
    init_file = os.path.join(str(tmp_path), f"pg_{world}")
    ctx = mp.start_processes(
        _worker, args=(world, init_file, names), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not ctx.join(timeout=1.0):  # raises ProcessRaisedException if a rank failed
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(
                f"distributed test with {world} ranks did not finish in {SPAWN_TIMEOUT_S} s"
            )


def test_two_ranks(tmp_path):
    _spawn(2, ["check_full", "check_sampled", "check_module"], tmp_path)


def test_three_ranks(tmp_path):
    _spawn(3, ["check_full", "check_sampled", "check_module", "check_subgroup"], tmp_path)


# ---- in-process (no process group) -------------------------------------------------------------
def test_shard_bounds_and_split():
    assert shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shard_bounds(6, 3) == [(0, 2), (2, 4), (4, 6)]
    with pytest.raises(ValueError):
        shard_bounds(2, 3)
    with pytest.raises(ValueError):
        check_bounds([(0, 3), (4, 10)], 10, 2)
    with pytest.raises(ValueError):
        check_bounds([(0, 3), (3, 9)], 10, 2)
    assert uniform_split(10, [(0, 5), (5, 10)]) == [5, 5]
    assert uniform_split(7, [(0, 1), (1, 100), (100, 200)]) == [1, 3, 3]
    assert sum(uniform_split(512, shard_bounds(1_000_003, 7))) == 512
    with pytest.raises(ValueError):
        uniform_split(2, shard_bounds(10, 3))
    assert init_shard_rows(5, 70_000, 3, seed=1, block=1000).equal(
        init_shard_rows(0, 70_000, 3, seed=1, block=1000)[5:]
    )


def test_one_shard_candidates_equal_single_device():
    n, N, R, T = 50, 6, 5, 7
    g = torch.Generator().manual_seed(0)
    retrieved = torch.randint(-1, n, (N, R), generator=g)
    target = torch.randint(0, n, (N,), generator=g)
    retrieved[:, 1] = target
    a = build_shard_candidates(retrieved, target, (0, n), T, torch.Generator().manual_seed(4))
    b = build_candidates(retrieved, target, n, T, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_world_size_one_without_process_group():
    """Uninitialised torch.distributed: the module is one shard and matches the full loss."""
    assert not dist.is_initialized()
    n, N, d = 37, 6, 4
    m = ShardedSampledSoftmaxLoss(
        n,
        d,
        method="full",
        bias=True,
        dtype=torch.float64,
        ignore_index=IGNORE,
        label_smoothing=0.05,
    )
    W, b, h, y, _ = _data(n, N, d, seed=7)
    with torch.no_grad():
        m.weight.copy_(W)
        m.bias.copy_(b)
    hr, Wf, bf = _leaf(h), _leaf(W), _leaf(b)
    loss = m(hr, y)
    loss.backward()
    ref = F.cross_entropy(h @ Wf.T + bf, y, ignore_index=IGNORE, label_smoothing=0.05)
    ref.backward()
    _close(loss, ref, "loss")
    _close(m.weight.grad, Wf.grad, "dW")
    _close(m.bias.grad, bf.grad, "db")
    assert m.comm.calls == 0  # no collectives without a process group


def test_stratified_estimator_is_unbiased():
    """Mean over draws of sum_r Z-hat_r (per-shard candidates and weights) -> the exact Z."""
    n, d, draws, T = 30, 4, 4000, 6
    bounds = [(0, 4), (4, 19), (19, 30)]
    g = torch.Generator().manual_seed(0)
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    h = torch.randn(1, d, generator=g, dtype=torch.float64).expand(draws, d)
    y = torch.full((draws,), 21)
    z_hat = torch.zeros(draws, dtype=torch.float64)
    for r, (lo, hi) in enumerate(bounds):
        retrieved = torch.tensor([[0, 2], [0, 2], [3, 7]][r]).expand(draws, 2)
        ids, logw = build_shard_candidates(
            retrieved, y, (lo, hi), uniform_split(T, bounds)[r], torch.Generator().manual_seed(r)
        )
        z = (W[lo:hi][ids] * h.unsqueeze(1)).sum(2)
        z_hat += torch.exp(z + logw.double()).sum(1)
    exact = torch.exp(h[0] @ W.T).sum()
    se = z_hat.std() / draws**0.5
    assert abs(z_hat.mean() - exact) < 4 * se, (float(z_hat.mean()), float(exact), float(se))


def test_state_dict_keeps_refresh_schedule():
    m = ShardedSampledSoftmaxLoss(
        60,
        4,
        method="lsh",
        num_candidates=4,
        num_uniform=4,
        refresh_every=3,
        lsh_bits=3,
        lsh_tables=2,
    )
    h, y = torch.randn(5, 4), torch.randint(0, 60, (5,))
    for _ in range(4):
        m(h, y).backward()
    assert (m.steps, m.refresh_count, m.steps_at_refresh) == (4, 2, 3)
    m2 = ShardedSampledSoftmaxLoss(
        60,
        4,
        method="lsh",
        num_candidates=4,
        num_uniform=4,
        refresh_every=3,
        lsh_bits=3,
        lsh_tables=2,
        seed=1,
    )
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.weight, m.weight) and m2.index is None
    m2(h, y).backward()  # the checkpoint's index, put back: no rebuild, schedule unchanged
    assert (m2.steps, m2.refresh_count, m2.steps_at_refresh) == (5, 2, 3)
    m2(h, y).backward()  # at step 5: 5 - 3 < 3, no refresh
    assert (m2.steps, m2.refresh_count, m2.steps_at_refresh) == (6, 2, 3)
    m2(h, y).backward()  # at step 6: refresh, as the uninterrupted run would
    assert (m2.steps, m2.refresh_count, m2.steps_at_refresh) == (7, 3, 6)
    bad = ShardedSampledSoftmaxLoss(60, 4, bounds=[(0, 60)], method="full")
    bad.bounds = [(0, 59)]
    with pytest.raises(ValueError):
        bad.load_state_dict(m.state_dict())


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_one_shard_partials_through_kernels(monkeypatch, impl):
    """Without a process group a call on shard [lo, hi) returns that shard's partial loss:
    log sum over the shard - the target logit where owned. This checks the shard-local
    algebra (targets outside the shard, the -g kept only by the owner, label smoothing's
    global n) through whichever ops route runs: the PyTorch twins or the Triton kernels
    (under TRITON_INTERPRET=1 on CPU)."""
    if impl == "triton":
        pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", impl)
    n, N, d, (lo, hi), eps = 29, 6, 16, (9, 21), 0.1
    g = torch.Generator().manual_seed(3)
    W, b, h = torch.randn(n, d, generator=g), torch.randn(n, generator=g), torch.randn(N, d)
    y = torch.tensor([0, 9, 15, 20, 21, 28])  # owned: rows 1, 2, 3
    gvec = torch.rand(N, generator=g) + 0.5
    owned = (y >= lo) & (y < hi)

    def reference(hf, Wf, bf, sampled_ids=None, sampled_logw=None):
        z = hf @ Wf[lo:hi].T + bf[lo:hi]
        if sampled_ids is None:
            lse = torch.logsumexp(z, 1)
        else:
            lse = torch.logsumexp(z.gather(1, sampled_ids) + sampled_logw, 1)
        zt = torch.where(owned, z.gather(1, (y - lo).clamp(0, hi - lo - 1)[:, None])[:, 0], 0)
        return lse - zt, z

    for path in ("full", "sampled"):
        Wr, br, hr = _leaf(W[lo:hi]), _leaf(b[lo:hi]), _leaf(h)
        Wf, bf, hf = _leaf(W), _leaf(b), _leaf(h)
        if path == "full":
            loss = sharded_cross_entropy(
                hr, Wr, y, br, shard=(lo, hi), num_classes=n, label_smoothing=eps, reduction="none"
            )
            ref, z = reference(hf, Wf, bf)
            zt = torch.logsumexp(z, 1) - ref  # lse - (1 - eps) zt - eps / n sum_shard z
            ref = ref + eps * zt - eps / n * z.sum(1)
        else:
            retrieved = torch.randint(-1, hi - lo, (N, 4), generator=g)
            ids, logw = build_shard_candidates(retrieved, y, (lo, hi), 5, g)
            loss = sharded_sampled_softmax_from_candidates(
                hr, Wr, y, ids, logw, br, shard=(lo, hi), reduction="none"
            )
            ref, _ = reference(hf, Wf, bf, ids, logw)
        (loss * gvec).sum().backward()
        (ref * gvec).sum().backward()
        tol = dict(atol=1e-4, rtol=1e-4)
        _close(loss, ref, f"{impl} {path} partial loss", **tol)
        _close(hr.grad, hf.grad, f"{impl} {path} dh", **tol)
        _close(Wr.grad, Wf.grad[lo:hi], f"{impl} {path} dW", **tol)
        _close(br.grad, bf.grad[lo:hi], f"{impl} {path} db", **tol)
