"""Speed, memory and accuracy of every path and peer vs class count, with a roofline.

    python -m bench.sweep --quick        # the README command: a few minutes on 2 CPU cores
    python -m bench.sweep                # the full sweep for this device
    triton-softmax-bench --n 1e4 1e5 --d 128 --N 256 --methods full lsh torch

Per (dtype, d, N, n) problem, every method does forward + backward + SGD step on the same
inputs (see bench.harness). One JSON record per measurement goes to
bench/results/<device>_<date>_<time>.jsonl:

  kind="peak"      the device's measured copy bandwidth and matmul FLOP/s (per dtype)
  kind="step"      one method on one problem: median/min/max ms of a step, peak memory,
                   status ok | skipped | oom | failed (+ reason), loss and its difference to
                   the exact loss; for faiss/lsh the index build ("refresh") timed on its
                   own, the amortised step (step + refresh / refresh_every), and the recall
                   of the target and of the exact top-10 among the retrieved candidates
  kind="roofline"  one kernel/op on one problem: achieved GB/s, GFLOP/s, % of the bound
                   (byte/FLOP models in bench.roofline)

Index refresh: the module rebuilds its index every `refresh_every` steps (library default
unless --refresh-every). Steps are timed with the index built beforehand and no rebuild
inside the timed loop; the rebuild is timed separately and amortised_ms = median_ms +
refresh_ms / refresh_every is recorded beside the step time. The summary shows both.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import sys
import time
import traceback
from pathlib import Path

import torch

from triton_softmax import IndexOptions, make_index, ops, recall_at_k
from triton_softmax.candidates import build_candidates
from triton_softmax.checks import check_int_option
from triton_softmax.lsh import LSHIndex, default_max_per_bucket, max_row_norm
from triton_softmax.reference.sampled_logits import sparse_grad_weight_ref

from . import harness, peers, roofline
from .harness import ALL_METHODS, BASELINE, NPROBE_VARIANT, OursRunner, Problem

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_REFRESH_EVERY = IndexOptions().refresh_every
STATUSES = ("ok", "skipped", "oom", "failed")


def _defaults(device: str) -> dict:
    """The full sweep of the issue for this device."""
    if device == "cuda":
        return dict(
            n=[10**k for k in range(3, 8)],
            d=[128, 512, 1024],
            N=[4096, 8192],
            dtype=["bf16", "fp32"],
        )
    return dict(n=[10**k for k in range(3, 8)], d=[128, 512], N=[256, 2048], dtype=["fp32"])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="triton-softmax-bench",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="README preset: N=256, d=128, n in 1e3..1e6, fp32, few repeats, plots",
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available"
    )
    p.add_argument("--n", type=float, nargs="+", help="class counts (1e6 accepted)")
    p.add_argument("--d", type=int, nargs="+", help="hidden sizes")
    p.add_argument("--N", type=int, nargs="+", help="tokens per batch")
    p.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), help="input/weight dtypes")
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help=f"subset of {', '.join(ALL_METHODS)} (default: all)",
    )
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--tag", default="", help="added to the results file name")
    harness.add_memory_flag(p)
    p.add_argument("--warmup", type=int, default=None, help="CPU warm-up steps (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="CPU timed steps (default 7)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="CPU: stop repeating a measurement after this many seconds (>=3 kept)",
    )
    p.add_argument(
        "--max-step-s",
        type=float,
        default=None,
        help="skip a method whose step the roofline predicts slower than this",
    )
    p.add_argument("--num-candidates", type=int, default=512, help="|S| (target included)")
    p.add_argument("--num-uniform", type=int, default=512, help="|T|")
    p.add_argument(
        "--refresh-every",
        type=int,
        default=DEFAULT_REFRESH_EVERY,
        help="steps per index rebuild, for the amortised time",
    )
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-roofline", action="store_true", help="skip peaks and kernel timings")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch (and FAISS) CPU threads; default: torch's own (records say which)",
    )
    p.add_argument("--peak-copy-mb", type=int, default=None, help="copy-bandwidth tensor size")
    p.add_argument("--peak-matmul", type=int, default=None, help="matmul size for FLOP/s")
    p.add_argument(
        "--plot",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw plots/ from this run's records (default: on with --quick)",
    )
    p.add_argument("--plot-dir", type=Path, default=None, help="where the PNGs go")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    full = _defaults(args.device)
    quick = dict(n=[10**k for k in range(3, 7)], d=[128], N=[256], dtype=["fp32"])
    base = quick if args.quick else full
    args.n = [int(x) for x in (args.n or base["n"])]
    args.d, args.N = args.d or base["d"], args.N or base["N"]
    args.dtype = args.dtype or base["dtype"]
    if args.device == "cpu" and args.dtype != ["fp32"]:
        p.error("CPU runs are fp32 only (bf16 matmuls on CPU would measure an emulation)")
    # lsh_copy / lsh_live / lsh_np<p> (variants of lsh) run only when asked for: the README's
    # quick sweep stays short
    args.methods = args.methods or [m for m in ALL_METHODS if m not in ("lsh_copy", "lsh_live")]
    unknown = [
        m
        for m in args.methods
        if m not in ALL_METHODS and m not in peers.PEERS and not NPROBE_VARIANT.fullmatch(m)
    ]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {ALL_METHODS}")
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.repeats = args.repeats if args.repeats is not None else (3 if args.quick else 7)
    args.budget_s = args.budget_s if args.budget_s is not None else (20.0 if args.quick else 60.0)
    args.max_step_s = (
        args.max_step_s if args.max_step_s is not None else (60.0 if args.quick else 300.0)
    )
    args.peak_copy_mb = args.peak_copy_mb or (1024 if args.device == "cuda" else 256)
    args.peak_matmul = args.peak_matmul or (8192 if args.device == "cuda" else 2048)
    args.plot = args.quick if args.plot is None else args.plot
    return args


# ---- peaks ---------------------------------------------------------------------------------
def measure_peaks(device: str, dtypes: list[str], copy_mb: int, matmul: int, repeats: int) -> dict:
    """Copy bandwidth (bytes read + written per second) and square-matmul FLOP/s per dtype.

    A peak is what the device can do, so it is taken from the fastest repeat (min_ms), not
    the median: on a shared machine the median measures the neighbours too. The records keep
    median/min/max, and value_basis says which one the value came from.
    """
    out = {}
    numel = copy_mb * (1 << 20) // 4
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    t = harness.time_fn(lambda a=src, b=dst: b.copy_(a), device, warmup=2, repeats=max(repeats, 5))
    out["copy"] = dict(
        what="copy_bandwidth",
        dtype="fp32",
        size=f"{copy_mb} MiB",
        **t,
        value=2 * src.nbytes / (t["min_ms"] / 1e3),
        value_basis="min_ms",
        unit="B/s",
    )
    del src, dst
    mm_dtypes = sorted(set(dtypes) | {"fp32"})
    for name in mm_dtypes:
        a = torch.randn(matmul, matmul, device=device).to(DTYPES[name])
        b = torch.randn(matmul, matmul, device=device).to(DTYPES[name])
        t = harness.time_fn(lambda a=a, b=b: a @ b, device, warmup=2, repeats=max(repeats, 5))
        out[f"matmul_{name}"] = dict(
            what="matmul",
            dtype=name,
            size=f"{matmul}^3",
            **t,
            value=2 * matmul**3 / (t["min_ms"] / 1e3),
            value_basis="min_ms",
            unit="FLOP/s",
        )
    return out


# ---- one method on one problem -------------------------------------------------------------
def _sizes(problem: Problem, dtype_name: str) -> dict:
    return dict(n=problem.n, d=problem.d, N=problem.N, dtype=dtype_name)


def _loss_figures(loss: float, exact: float) -> dict:
    return dict(
        loss=loss,
        exact_loss=exact,
        loss_abs_diff=abs(loss - exact),
        loss_rel_diff=abs(loss - exact) / max(abs(exact), 1e-30),
    )


def _predicted_step_s(method: str, problem: Problem, peaks: dict | None) -> float | None:
    """Lower bound on a dense path's step from the roofline (6-8 N n d FLOPs); None if unknown."""
    if not peaks or method not in ("torch", "torch_compile", "full", "cce", "liger"):
        return None
    key = f"matmul_{_dtype_name(problem.dtype)}"
    flops = peaks.get(key, peaks["matmul_fp32"])["value"]
    return 6.0 * problem.N * problem.n * problem.d / flops


def _dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def run_method(method: str, problem: Problem, args, peaks: dict | None, emit) -> dict:
    """Measure one method; always returns (and emits) a record, whatever happened."""
    dname = _dtype_name(problem.dtype)
    rec = dict(
        kind="step",
        method=method,
        resolved_method=None,
        **_sizes(problem, dname),
        num_candidates=args.num_candidates,
        num_uniform=args.num_uniform,
        lr=args.lr,
        seed=args.seed,
        data=f"planted(PLANT={harness.PLANT})",
        status="ok",
        reason=None,
        median_ms=None,
        min_ms=None,
        max_ms=None,
        amortised_ms=None,
    )
    elt = torch.empty((), dtype=problem.dtype).element_size()
    need = harness.estimate_bytes(
        method, problem.n, problem.d, problem.N, elt, args.num_candidates, args.num_uniform
    )
    avail = harness.available_bytes(problem.device)
    pred = _predicted_step_s(method, problem, peaks)
    if need > 0.8 * avail:
        rec.update(
            status="skipped",
            reason=f"estimated peak {need / 2**30:.1f} GiB > 80% of "
            f"available {avail / 2**30:.1f} GiB on {problem.device}",
        )
        return emit(rec)
    if pred is not None and pred > args.max_step_s:
        rec.update(
            status="skipped",
            reason=f"roofline lower bound {pred:.0f} s/step (6 N n d "
            f"FLOPs at the measured matmul rate) > --max-step-s {args.max_step_s:g}",
        )
        return emit(rec)
    runner = None
    try:
        K = None
        if method == "shared_neg_matched":
            target_ms = getattr(args, "lsh_ms", {}).get((problem.n, problem.d, problem.N))
            if target_ms is None:
                rec.update(status="skipped", reason="no lsh step time in this run to match")
                return emit(rec)
            K = match_negatives(problem, target_ms, args)
            rec.update(matched_to="lsh", matched_to_ms=target_ms)
        runner, status, reason = harness.make_runner(
            method,
            problem,
            num_candidates=args.num_candidates,
            num_uniform=args.num_uniform,
            lr=args.lr,
            seed=args.seed,
            num_negatives=K,
        )
        if runner is None:
            rec.update(status=status, reason=reason)
            return emit(rec)
        if method in harness.BASELINE_PATHS:
            rec["num_negatives"] = runner.num_negatives
        rec.update(
            resolved_method=runner.resolved, explain=runner.explain, compile_s=runner.compile_s
        )
        if harness.is_our_path(method) and runner.resolved != method:
            rec["reason"] = f"dispatcher ran {runner.resolved!r}: {runner.explain}"
        if isinstance(runner, OursRunner) and runner.sampled:
            _time_refresh(runner, problem, args, rec)
        first = getattr(runner, "first_loss", None)
        if first is None:
            first = runner.step()  # at the initial weights: the loss on the problem's inputs
            harness.sync(problem.device)
        rec.update(_loss_figures(float(first), problem.exact_loss))
        if isinstance(runner, OursRunner) and runner.sampled:
            _recall(runner, problem, args, rec)
        t = harness.time_fn(
            runner.step,
            problem.device,
            warmup=max(args.warmup - 1, 0),
            repeats=args.repeats,
            min_repeats=min(3, args.repeats),
            budget_s=args.budget_s,
        )
        rec.update(t, warmup=args.warmup)
        if rec.get("refresh_ms") is not None:
            rec["amortised_ms"] = rec["median_ms"] + rec["refresh_ms"] / args.refresh_every
        else:
            rec["amortised_ms"] = rec["median_ms"]
        rec.update(
            harness.measure_memory(
                runner.step,
                problem.device,
                harness.storage_bytes(runner.state_tensors()),
                runner.index_bytes(),
            )
        )
        if not args.no_roofline and peaks:
            _roofline(runner, problem, args, peaks, emit)
    except torch.cuda.OutOfMemoryError as exc:
        rec.update(status="oom", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    except MemoryError as exc:
        rec.update(status="oom", reason=f"MemoryError: {exc}")
    except Exception as exc:
        if "DefaultCPUAllocator: can't allocate memory" in str(exc):
            rec.update(status="oom", reason=str(exc).splitlines()[0])
        else:
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            rec.update(status="failed", reason=tb[:2000])
    finally:
        del runner
        gc.collect()
        if problem.device == "cuda":
            torch.cuda.empty_cache()
    if rec["status"] != "ok":
        rec.update(median_ms=None, min_ms=None, max_ms=None, amortised_ms=None)
    return emit(rec)


def match_negatives(problem: Problem, target_ms: float, args) -> int:
    """K at which the shared-negative baseline's step takes target_ms: its step time at
    K = 1024, 2048, ... (3 repeats each) until it passes target_ms or K reaches n - 1, then
    linear interpolation between the last two points."""
    pts: list[tuple[int, float]] = []
    K = min(1024, problem.n - 1)
    while True:
        runner = harness.make_runner(
            "shared_neg1024", problem, lr=args.lr, seed=args.seed, num_negatives=K
        )[0]
        t = harness.time_fn(runner.step, problem.device, warmup=1, repeats=3)["median_ms"]
        pts.append((K, t))
        del runner
        if t >= target_ms or K >= problem.n - 1:
            break
        K = min(2 * K, problem.n - 1)
    if len(pts) == 1 or pts[-1][1] < target_ms:
        return pts[-1][0] if pts[-1][1] < target_ms else pts[0][0]
    (k0, t0), (k1, t1) = pts[-2], pts[-1]
    frac = (target_ms - t0) / max(t1 - t0, 1e-9)
    return int(min(problem.n - 1, max(1, round(k0 + frac * (k1 - k0)))))


def _time_refresh(runner: OursRunner, problem: Problem, args, rec: dict) -> None:
    """Index build time (first build, then repeats while under the budget)."""
    times = []
    spent = 0.0
    for _ in range(max(1, args.repeats)):
        harness.sync(problem.device)
        t0 = time.perf_counter()
        runner.refresh()
        harness.sync(problem.device)
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if spent > args.budget_s / 2:
            break
    times.sort()
    rec.update(
        refresh_ms=1e3 * times[len(times) // 2],
        refresh_min_ms=1e3 * times[0],
        refresh_max_ms=1e3 * times[-1],
        refresh_repeats=len(times),
        refresh_every=args.refresh_every,
    )


def _recall(runner: OursRunner, problem: Problem, args, rec: dict) -> None:
    """Recall of the target and of the exact top-10 among the index's retrieved classes."""
    C = args.num_candidates - 1  # what forward() asks the index for (the target is added)
    with torch.no_grad():
        retrieved = runner.module.index.search(problem.hidden, C)
    hit = (retrieved == problem.target.unsqueeze(1)).any(dim=1)
    rec.update(
        retrieved_per_row=C,
        target_recall=float(hit.float().mean()),
        top10_recall=recall_at_k(retrieved, problem.top10) if problem.top10 is not None else None,
    )


# ---- roofline: each kernel/op on the runner's own state -----------------------------------
def _roofline(runner, problem: Problem, args, peaks: dict, emit) -> None:
    if not isinstance(runner, OursRunner) or runner.resolved.startswith("uniform"):
        return  # uniform: no index, no roofline model of its own
    dev, dname = problem.device, _dtype_name(problem.dtype)
    N, n, d = problem.N, problem.n, problem.d
    s = torch.empty((), dtype=problem.dtype).element_size()
    bw = peaks["copy"]["value"]
    fl = peaks.get(f"matmul_{dname}", peaks["matmul_fp32"])["value"]
    h, y = problem.hidden, problem.target
    W = runner.module.weight.detach()
    ops_to_time = []
    with torch.no_grad():
        if runner.resolved == "full":
            _, lse = ops.linear_ce_fwd(h, W, None, y)
            g = torch.ones(N, dtype=lse.dtype, device=dev)
            ops_to_time += [
                (
                    "full_ce_fwd",
                    lambda: ops.linear_ce_fwd(h, W, None, y),
                    roofline.full_ce_fwd(N, n, d, s),
                ),
                (
                    "full_ce_bwd",
                    lambda: ops.linear_ce_bwd(g, h, W, None, y, lse),
                    roofline.full_ce_bwd(N, n, d, s),
                ),
            ]
        else:
            idx = runner.module.index
            retrieved = idx.search(h, args.num_candidates - 1)
            gen = torch.Generator(device=dev).manual_seed(args.seed)
            cand_ids, cand_logw = build_candidates(retrieved, y, n, args.num_uniform, gen)
            M = cand_ids.shape[1]
            _, lse = ops.sampled_logits_fwd(h, W, None, cand_ids, cand_logw, y)
            g = torch.ones(N, dtype=lse.dtype, device=dev)

            def bwd():  # the sparse_grad=True backward of SampledSoftmaxFunction, op by op
                coef, ids = ops.sampled_logits_coef(g, h, W, None, cand_ids, cand_logw, y, lse)
                ops.grad_hidden(coef, ids, W)
                sparse_grad_weight_ref(coef, ids, h, n, W.dtype)

            ops_to_time += [
                (
                    "sampled_fwd",
                    lambda: ops.sampled_logits_fwd(h, W, None, cand_ids, cand_logw, y),
                    roofline.sampled_fwd(N, M, d, s),
                ),
                ("sampled_bwd", bwd, roofline.sampled_bwd(N, M, d, s)),
            ]
            if runner.path == "lsh":
                if not isinstance(idx, LSHIndex):  # the SimHash kernels run in the tables
                    idx = make_index("lsh", n, d, args.num_candidates, seed=args.seed).build(W)
                planes = idx.hyperplanes
                L, K = planes.shape[0], planes.shape[1]
                B = idx.max_per_bucket or default_max_per_bucket(args.num_candidates - 1, L)
                codes = ops.simhash_codes(h, planes, None, None)
                mnorm = max_row_norm(W, None)
                C = args.num_candidates - 1
                ops_to_time += [
                    (
                        "simhash_queries",
                        lambda: ops.simhash_codes(h, planes, None, None),
                        roofline.simhash(N, d, L, K, s),
                    ),
                    (
                        "simhash_keys",
                        lambda: ops.simhash_codes(W, planes, None, mnorm),
                        roofline.simhash(n, d, L, K, s),
                    ),
                    (
                        "lsh_lookup",
                        lambda: ops.lsh_candidates(codes, idx.sorted_ids, idx.offsets, C, B),
                        roofline.lsh_lookup(N, L, B, C),
                    ),
                ]
        for name, fn, work in ops_to_time:
            t = harness.time_fn(
                fn,
                dev,
                warmup=1,
                repeats=args.repeats,
                min_repeats=min(3, args.repeats),
                budget_s=args.budget_s / 2,
            )
            emit(
                dict(
                    kind="roofline",
                    kernel=name,
                    method=runner.resolved,
                    **_sizes(problem, dname),
                    **t,
                    impl="triton" if ops.use_triton(h) else "torch twin",
                    peak_bandwidth=bw,
                    peak_flops=fl,
                    **roofline.achieved(work, t["median_ms"] / 1e3, bw, fl),
                )
            )


# ---- the run -------------------------------------------------------------------------------
class Writer:
    """Appends one JSON line per record, each with the run's environment fields."""

    def __init__(self, path: Path, env: dict, run_id: str) -> None:
        self.path, self.env, self.run_id = path, env, run_id
        self.records: list[dict] = []
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, rec: dict) -> dict:
        full = dict(run_id=self.run_id, time=harness.now_iso(), **self.env, **rec)
        for k, v in list(full.items()):
            if isinstance(v, float) and not math.isfinite(v):
                full[k] = None  # JSON has no NaN/inf
        with self.path.open("a") as f:
            f.write(json.dumps(full, default=str) + "\n")
        self.records.append(full)
        return full


def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def summary_table(records: list[dict]) -> str:
    """Per problem: each method's step time, speedup over plain PyTorch, memory, errors."""
    steps = [r for r in records if r.get("kind") == "step"]
    keys = sorted({(r["device"], r["dtype"], r["d"], r["N"], r["n"]) for r in steps})
    head = (
        f"{'n':>9} {'method':<20} {'status':<7} {'step ms':>9} {'min-max ms':>17} "
        f"{'+refresh ms':>11} {'vs torch':>8} {'+refresh':>8} {'peak MiB':>9} {'loss err':>8} "
        f"{'tgt recall':>10} {'top10 recall':>12}"
    )
    lines = []
    last = None
    for key in keys:
        dev, dt, d, N, n = key
        if (dev, dt, d, N) != last:
            lines += ["", f"== {dev} {dt} d={d} N={N} ==", head]
            last = (dev, dt, d, N)
        rows = [r for r in steps if (r["device"], r["dtype"], r["d"], r["N"], r["n"]) == key]
        base = next((r for r in rows if r["method"] == BASELINE and r["status"] == "ok"), None)
        for r in rows:
            name = r["method"] + (
                f"->{r['resolved_method']}"
                if r.get("resolved_method") and r["resolved_method"] != r["method"]
                else ""
            )
            ok = r["status"] == "ok"
            sp = base["median_ms"] / r["median_ms"] if ok and base else None
            spa = (
                base["median_ms"] / r["amortised_ms"]
                if ok and base and r.get("amortised_ms")
                else None
            )
            mm = f"[{r['min_ms']:.1f}-{r['max_ms']:.1f}]" if ok else ""
            peak = r.get("peak_mem_bytes")
            lines.append(
                f"{n:>9} {name:<20} {r['status']:<7} {_fmt(r.get('median_ms'), '9.1f'):>9} "
                f"{mm:>17} {_fmt(r.get('amortised_ms'), '9.1f'):>11} {_fmt(sp, '7.2f'):>8} "
                f"{_fmt(spa, '8.2f'):>8} {_fmt(peak / 2**20 if peak else None, '9.0f'):>9} "
                f"{_fmt(r.get('loss_abs_diff'), '8.1e'):>8} "
                f"{_fmt(r.get('target_recall'), '7.2f'):>10} "
                f"{_fmt(r.get('top10_recall'), '6.2f'):>12}"
            )
            if r["status"] != "ok" and r.get("reason"):
                lines.append(f"{'':>9}   ({r['reason'][:150]})")
    if lines:
        lines += ["", LEGEND]
    return "\n".join(lines)


LEGEND = (
    "legend: step ms = median training step (forward, backward, SGD); +refresh = with the "
    "index rebuild spread over refresh_every steps; vs torch = plain PyTorch's step time / "
    "this one; loss err = |loss - exact loss|; tgt / top10 recall = share of targets / of the "
    "exact top-10 classes among the candidates; a->b = asked for a, ran b"
)


def main(argv=None) -> int:
    args = parse_args(argv)
    harness.apply_memory_flag(args)
    if args.threads is not None:
        check_int_option("--threads", args.threads, 1)
        torch.set_num_threads(args.threads)  # FAISS follows torch's count (index/faiss.py)
    env = harness.env_info(args.device)
    stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    slug = "".join(c if c.isalnum() else "-" for c in env["device_name"]).strip("-").lower()
    slug = "-".join(p for p in slug.split("-") if p)
    run_id = f"{args.device}_{slug}_{stamp}" + (f"_{args.tag}" if args.tag else "")
    path = args.out_dir / f"{run_id}.jsonl"
    emit = Writer(path, env, run_id)
    machine = (
        f"{env['device_name']}, {env['torch_threads']} threads, torch {env['torch_version']}, "
        f"triton {env['triton_version']}, faiss {env['faiss_version']}, commit "
        f"{str(env['git_commit'])[:10]}{' (dirty)' if env['git_dirty'] else ''}"
    )
    print(f"[bench] records -> {path}", flush=True)

    peaks = None
    if not args.no_roofline:
        peaks = measure_peaks(
            args.device, args.dtype, args.peak_copy_mb, args.peak_matmul, args.repeats
        )
        for p in peaks.values():
            emit(dict(kind="peak", **p))  # the roofline plot draws them

    problems = [
        (dt, d, N, n) for dt in args.dtype for d in args.d for N in args.N for n in sorted(args.n)
    ]
    total = len(problems) * len(args.methods)
    bar = _progress(total, args.no_progress)
    need_topk = any(m.split("_")[0] in ("faiss", "lsh") for m in args.methods)
    for dt, d, N, n in problems:
        try:
            problem = Problem(n, d, N, DTYPES[dt], args.device, args.seed, need_topk)
        except Exception as exc:  # the problem itself does not fit: every method says so
            reason = f"problem setup failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            for m in args.methods:
                emit(
                    dict(
                        kind="step",
                        method=m,
                        n=n,
                        d=d,
                        N=N,
                        dtype=dt,
                        status="oom" if "memory" in reason.lower() else "failed",
                        reason=reason,
                        median_ms=None,
                        min_ms=None,
                        max_ms=None,
                        amortised_ms=None,
                    )
                )
                bar.update(1)
            continue
        for m in args.methods:
            bar.set_description(f"{dt} d={d} N={N} n={n:.0e} {m}")
            rec = run_method(m, problem, args, peaks, emit)
            if m == "lsh" and rec["status"] == "ok":  # what shared_neg_matched matches
                args.lsh_ms = {**getattr(args, "lsh_ms", {}), (n, d, N): rec["median_ms"]}
            bar.update(1)  # a method that did not run says why in the table's row
        del problem
        gc.collect()
    bar.close()

    if args.plot:
        from plots import plot as _plot

        plot_dir = args.plot_dir or (Path(__file__).resolve().parents[1] / "plots")
        files = _plot.main(["--results", str(path), "--out-dir", str(plot_dir)])
        print(f"[bench] plots -> {', '.join(str(f) for f in files)}")
    print(f"\nmachine: {machine}" + summary_table(emit.records))
    print(f"\n[bench] {len(emit.records)} records in {path}")
    return 0


def _progress(total: int, disable: bool):
    try:
        from tqdm import tqdm

        return tqdm(total=total, disable=disable, file=sys.stderr, dynamic_ncols=True)
    except ImportError:  # pragma: no cover - tqdm is a dependency

        class _Bar:
            def update(self, k):
                pass

            def set_description(self, s):
                pass

            def write(self, s):
                print(s, file=sys.stderr)

            def close(self):
                pass

        return _Bar()


if __name__ == "__main__":
    sys.exit(main())
