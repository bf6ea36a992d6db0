"""Where a sampled training step's time goes, stage by stage, beside the hand-written baseline.

    python3 -m bench.step_profile                       # n = 10^6, N = 256, d = 128, 1 thread
    python3 -m bench.step_profile --n 1e5 --N 1024 --S 64 --T 64   # the issue's profile size

Part 1, stages of the library's lsh step (per-example S and T, sparse weight gradient), each
timed on its own (median of --repeats after one warm-up, inputs from the previous stage):
the search (clusters: routing to lists, then the exact scores of the probed lists; SimHash
tables: hashing, then lookup by collision count; on CUDA the clusters search's list tiles
beside the per-(query, list) path they replaced on 2026-12-01: list_topk's twin and kernel),
candidate build (S + uniform T), logits
(forward), backward (coefficients and dh), gradient assembly (the sparse dW: the previous
uncoalesced form and today's coalesced one), optimizer (SGD, torch.optim.SparseAdam on each
gradient form, FusedSparseAdam on the coalesced one).

Part 2, whole steps (zero_grad, forward, backward, SGD step) side by side: one repeat of every
configuration per round, rounds interleaved, medians: the hand-written shared-negative
baseline (bench/baselines.py) at K = |T| and each --K, the library's lsh / uniform paths
with per-example and shared T, each searching path's index search alone (`*_search_only`:
the floor a faster loss cannot go below), and lsh with candidate_scheme="batch_union" at
small |S| per row (--union-S: the batch's hard candidates and the shared T scored as one
dense product, per-row estimator weights exact). All configurations share one weight tensor
(SGD moves it a little every step; the index is built once, before timing, and never
refreshed).

Part 3, exact top-k of --topk-N queries over --topk-n classes: exact_topk (chunked), its
previous form, and plain h @ W.T + topk (an (N, n) buffer), interleaved rounds.

One JSON record to bench/results/step_profile-<time>.json, with the machine, the versions and
the 1-minute load average before and after (the machine is shared: read ratios, not absolutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gc
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from triton_softmax import SampledSoftmaxLoss, exact_topk, ops
from triton_softmax.candidates import build_candidates
from triton_softmax.index.simhash import default_max_per_bucket
from triton_softmax.optim import FusedSparseAdam
from triton_softmax.reference.sampled_logits import sparse_grad_weight_ref
from triton_softmax.reference.simhash import lsh_candidates_ref

from . import harness
from .baselines import SharedNegativeSoftmax

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_DEVICE = "cpu"  # set by main (--device)


def _clock() -> float:
    """perf_counter after the device has finished its queued work (CUDA kernels are
    asynchronous: without the synchronize a step would be timed at its launch cost)."""
    if _DEVICE == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def uncoalesced_grad_weight(coef, ids, hidden, n, dtype):
    """The sparse dW as the library built it before 2026-11-30: one row per nonzero slot,
    uncoalesced (kept here as the 'today' of the comparison)."""
    d = hidden.shape[1]
    keep = (coef != 0).nonzero()
    ex, slot = keep[:, 0], keep[:, 1]
    rows = coef[ex, slot].unsqueeze(1) * hidden.to(coef.dtype)[ex]
    return torch.sparse_coo_tensor(
        ids[ex, slot].unsqueeze(0), rows.to(dtype), (n, d), check_invariants=False
    )


def median_ms(fn, repeats: int, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = _clock()
        fn()
        times.append(_clock() - t0)
    return dict(
        median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times), repeats=len(times)
    )


def stage_profile(W: nn.Parameter, h, y, args) -> dict:
    """Part 1: the lsh step's stages, each timed alone."""
    n = W.shape[0]
    module = SampledSoftmaxLoss(
        weight=W,
        method="lsh",
        num_candidates=args.S,
        num_uniform=args.T,
        sparse_grad=True,
        search_min_mass=None,
    )
    t0 = _clock()
    module.refresh("lsh")
    build_s = _clock() - t0
    index = module.index
    gen = torch.Generator(device=W.device).manual_seed(0)
    hd = h.detach()
    out: dict = dict(index_build_s=build_s, generator=type(index).__name__)
    r = args.repeats
    if hasattr(index, "query_codes"):  # SimHash tables (lsh_generator="tables")
        B = index.max_per_bucket or default_max_per_bucket(args.S, index.num_tables)
        out.update(lsh_bits=index.num_bits, lsh_tables=index.num_tables)
        codes = index.query_codes(hd)
        out["hashing"] = median_ms(lambda: index.query_codes(hd), r)

        def lookup():
            return lsh_candidates_ref(codes, index.sorted_ids, index.offsets, args.S - 1, B)

        retrieved = lookup()[0]
        out["lookup"] = median_ms(lookup, r)
    else:  # the clusters default: route to lists, then score the probed lists exactly
        out.update(lists=int(index.centroids.shape[0]), nprobe=index.effective_nprobe)
        out["probe_lists"] = median_ms(lambda: index.probe_lists(hd), r)
        out["search"] = median_ms(lambda: index.search(hd, args.S - 1), r)
        if hd.is_cuda:  # the search's tiles (the CUDA path since 2026-12-01) beside the
            # per-(query, list) path it replaced: list_topk's twin, and its kernel
            lists = index.probe_lists(hd)
            out["search_fixed_list_topk_twin"] = median_ms(
                lambda: index._search_fixed(hd, lists, args.S - 1), r
            )
            route = ops.ROUTES["list_topk"]
            ops.ROUTES["list_topk"] = dataclasses.replace(route, fallback=ops._any_fp64)
            try:
                out["search_fixed_list_topk_kernel_unverified"] = median_ms(
                    lambda: index._search_fixed(hd, lists, args.S - 1), r
                )
            finally:
                ops.ROUTES["list_topk"] = route
        out["fraction_scored"] = index.fraction_scored(hd)
        retrieved = index.search(hd, args.S - 1)
    ids, logw = build_candidates(retrieved, y, n, args.T, gen)
    out["candidate_build"] = median_ms(lambda: build_candidates(retrieved, y, n, args.T, gen), r)
    Wd = W.detach()
    loss, lse = ops.sampled_logits_fwd(hd, Wd, None, ids, logw, y)
    out["logits_forward"] = median_ms(lambda: ops.sampled_logits_fwd(hd, Wd, None, ids, logw, y), r)
    g = torch.full_like(loss, 1.0 / loss.shape[0])
    coef, cids, dh = ops.sampled_logits_bwd(g, hd, Wd, None, ids, logw, y, lse)
    out["backward_coef_dh"] = median_ms(
        lambda: ops.sampled_logits_bwd(g, hd, Wd, None, ids, logw, y, lse), r
    )
    old = uncoalesced_grad_weight(coef, cids, hd, n, Wd.dtype)
    new = sparse_grad_weight_ref(coef, cids, hd, n, Wd.dtype)
    out["grad_assembly_uncoalesced_before"] = median_ms(
        lambda: uncoalesced_grad_weight(coef, cids, hd, n, Wd.dtype), r
    )
    out["grad_assembly_coalesced_now"] = median_ms(
        lambda: sparse_grad_weight_ref(coef, cids, hd, n, Wd.dtype), r
    )
    out["grad_slots"] = int(old._nnz())
    out["grad_distinct_rows"] = int(new._nnz())
    out["grad_max_abs_diff"] = float((old.coalesce().values() - new.values()).abs().max())

    # optimizers side by side: one parameter copy, each optimizer its own state, one step of
    # each per round (rounds interleaved, so load changes hit all of them alike)
    param = nn.Parameter(Wd.clone())
    opts = [
        ("sgd_uncoalesced_before", torch.optim.SGD, old),
        ("sgd_coalesced_now", torch.optim.SGD, new),
        ("sparse_adam_uncoalesced_before", torch.optim.SparseAdam, old),
        ("sparse_adam_coalesced_now", torch.optim.SparseAdam, new),
        ("fused_sparse_adam_coalesced_now", FusedSparseAdam, new),
    ]
    opts = [(name, make([param], lr=1e-3), grad) for name, make, grad in opts]
    times: dict[str, list[float]] = {name: [] for name, _, _ in opts}
    for k in range(r + 1):
        for name, opt, grad in opts:
            param.grad = grad
            t0 = _clock()
            opt.step()
            if k:  # the first round is the warm-up (and allocates the moments)
                times[name].append(_clock() - t0)
    for name, v in times.items():
        out["optimizer_" + name] = dict(
            median_ms=1e3 * statistics.median(v), min_ms=1e3 * min(v), repeats=len(v)
        )
    del opts, param
    gc.collect()
    return out


class _Step:
    """zero_grad, forward, backward, optimizer step of one configuration."""

    def __init__(self, name, module, h, y, opt):
        self.name, self.module, self.h, self.y, self.opt = name, module, h, y, opt

    def __call__(self):
        self.opt.zero_grad(set_to_none=True)
        self.h.grad = None
        self.module(self.h, self.y).backward()
        self.opt.step()


class _Search:
    """The index search of one configuration alone (|S| - 1 ids per row)."""

    def __init__(self, name, index, h, k):
        self.name, self.index, self.h, self.k = name, index, h, k

    def __call__(self):
        self.index.search(self.h, self.k)


def step_comparison(W: nn.Parameter, h, y, args) -> dict:
    """Part 2: whole steps, interleaved rounds, medians."""
    n, d = W.shape
    configs = []
    for K in sorted({args.T, *args.K}):
        base = SharedNegativeSoftmax(n, d, K, weight=W)
        configs.append((f"baseline_shared_neg_K{K}", base))
    common = dict(weight=W, num_candidates=args.S, num_uniform=args.T, sparse_grad=True)
    ungated = dict(search_min_mass=None)  # every step searches, as once trained
    refresh_s = {}
    searches = []
    for spec in args.methods:  # "faiss:ivfpq" = method faiss with faiss_index="ivfpq"
        method, _, kind = spec.partition(":")
        extra = dict(faiss_index=kind) if kind else {}
        for scheme in ("per_example", "shared_samples"):
            gate = ungated if method in ("lsh", "faiss") else {}
            m = SampledSoftmaxLoss(
                method=method, candidate_scheme=scheme, **common, **extra, **gate
            )
            name = f"{method}{'_' + kind if kind else ''}_{scheme}"
            if method != "uniform":
                t0 = _clock()
                m.refresh(method)
                refresh_s[name] = _clock() - t0  # one build: amortise over refresh_every
                m.refresh_every = 1 << 62
            configs.append((name, m))
            if method != "uniform" and scheme == "per_example":  # the search alone: the
                # part of the step a faster loss cannot remove
                searches.append((f"{method}{'_' + kind if kind else ''}_search_only", m))
    for S in args.union_S:  # hard candidates of the whole batch scored as one dense product
        m = SampledSoftmaxLoss(
            weight=W,
            method="lsh",
            num_candidates=S,
            num_uniform=args.T,
            sparse_grad=True,
            candidate_scheme="batch_union",
            search_min_mass=None,
        )
        m.refresh("lsh")
        m.refresh_every = 1 << 62
        configs.append((f"lsh_batch_union_S{S}", m))
    steps = []
    for name, module in configs:
        hh = h.detach().clone().requires_grad_(True)
        opt = torch.optim.SGD([W], lr=1e-3)
        steps.append(_Step(name, module, hh, y, opt))
    hd = h.detach()
    for name, m in searches:
        steps.append(_Search(name, m.index, hd, args.S - 1))
    for s in steps:  # warm-up
        s()
    times: dict[str, list[float]] = {s.name: [] for s in steps}
    for _ in range(args.repeats):
        for s in steps:
            t0 = _clock()
            s()
            times[s.name].append(_clock() - t0)
    return {
        k: dict(
            median_ms=1e3 * statistics.median(v),
            min_ms=1e3 * min(v),
            repeats=len(v),
            **({"build_s": refresh_s[k]} if k in refresh_s else {}),
        )
        for k, v in times.items()
    }


def previous_exact_topk(hidden, weight, k, chunk=1 << 16):
    """exact_topk as it was before 2026-11-30 (top-k over [best | whole chunk] per chunk)."""
    N, n, dev = hidden.shape[0], weight.shape[0], hidden.device
    best_s = torch.full((N, 0), float("-inf"), device=dev)
    best_i = torch.zeros((N, 0), dtype=torch.int64, device=dev)
    h = hidden.float()
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        s = torch.cat([best_s, h @ weight[lo:hi].float().T], dim=1)
        i = torch.cat([best_i, torch.arange(lo, hi, device=dev).expand(N, -1)], dim=1)
        best_s, pos = torch.topk(s, min(k, s.shape[1]), dim=1)
        best_i = torch.gather(i, 1, pos)
    return best_s, best_i


def topk_comparison(args) -> dict:
    """Part 3: exact top-k of N queries over n classes, three ways, interleaved rounds."""
    n, N, k = int(args.topk_n), args.topk_N, args.topk_k
    W = harness.make_weight(n, args.d, torch.float32, _DEVICE, 1)
    h = torch.randn(N, args.d, generator=torch.Generator().manual_seed(2)).to(_DEVICE)
    fns = {
        "plain_matmul_topk": lambda: torch.topk(h @ W.T, k, dim=1),
        "exact_topk_now": lambda: exact_topk(h, W, k),
        "exact_topk_before": lambda: previous_exact_topk(h, W, k),
    }
    same = torch.equal(fns["plain_matmul_topk"]().indices, fns["exact_topk_now"]()[1])
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            t0 = _clock()
            fn()
            times[name].append(_clock() - t0)
    out = {
        name: dict(median_ms=1e3 * statistics.median(v), min_ms=1e3 * min(v), repeats=len(v))
        for name, v in times.items()
    }
    return dict(n=n, N=N, k=k, same_ids_as_plain=same, **out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=float, default=1e6)
    p.add_argument("--N", type=int, default=256)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--S", type=int, default=512, help="|S| of the library (with the target)")
    p.add_argument("--T", type=int, default=512, help="|T| of the library")
    p.add_argument("--K", type=int, nargs="*", default=[1024], help="extra baseline K values")
    p.add_argument(
        "--methods",
        nargs="*",
        default=["lsh", "uniform"],
        help="lsh, uniform, faiss; faiss:KIND picks faiss_index (flat / ivf / ivfpq)",
    )
    p.add_argument(
        "--union-S",
        type=int,
        nargs="*",
        default=[4, 8],
        help="|S| per row of the lsh batch_union configurations (union of N |S| ids)",
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="cuda: times wait for the GPU"
    )
    p.add_argument("--skip-stages", action="store_true")
    p.add_argument("--topk-n", type=float, default=120_000, help="part 3 classes (0: skip)")
    p.add_argument("--topk-N", type=int, default=1024)
    p.add_argument("--topk-k", type=int, default=10)
    p.add_argument("--out", type=Path, default=None)
    harness.add_memory_flag(p)
    args = p.parse_args(argv)
    harness.apply_memory_flag(args)
    torch.set_num_threads(args.threads)
    global _DEVICE
    _DEVICE = args.device
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    n = int(args.n)
    load_before = os.getloadavg()[0]
    W = nn.Parameter(harness.make_weight(n, args.d, torch.float32, args.device, 0))
    h, y = harness.make_inputs(W.detach(), args.N, 0)
    rec = dict(
        kind="step_profile",
        time=harness.now_iso(),
        env=harness.env_info(args.device),
        machine=(
            "CPU (env: model, cores, versions; the load averages say how busy it was)"
            if args.device == "cpu"
            else "GPU (env names it; timings synchronize the device around each call)"
        ),
        config=dict(
            n=n,
            N=args.N,
            d=args.d,
            S=args.S,
            T=args.T,
            K=args.K,
            threads=args.threads,
            device=args.device,
            repeats=args.repeats,
            methods=args.methods,
            union_S=args.union_S,
        ),
        load_avg_1min_before=load_before,
    )
    if not args.skip_stages:
        rec["stages"] = stage_profile(W, h, y, args)
        print(json.dumps(rec["stages"], indent=1))
    rec["steps"] = step_comparison(W, h, y, args)
    if args.topk_n:
        rec["topk"] = topk_comparison(args)
        print(json.dumps(rec["topk"], indent=1))
    rec["load_avg_1min_after"] = os.getloadavg()[0]
    for k, v in rec["steps"].items():
        print(f"{k:40s} {v['median_ms']:9.1f} ms")
    dev = "cuda-" if args.device == "cuda" else ""
    out = args.out or RESULTS_DIR / (
        f"step_profile-{dev}n{n}-N{args.N}-S{args.S}-T{args.T}-"
        + _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        + ".json"
    )
    out.write_text(json.dumps(rec, indent=1))
    print(f"load average {load_before:.2f} -> {rec['load_avg_1min_after']:.2f}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
