"""Training steps of several methods on one planted problem, timed in interleaved rounds.

A shared machine's load drifts over a sweep that runs method after method; here every round
times one step of each method in turn, so a slow minute costs all of them alike. Each method
also reports the recall of the target and of the exact top-10 among what its index retrieves
(bench.sweep's measure), so its speed stands beside its quality, and the time of its index
build: the first (cold) and a second one (what a refresh costs in training: FAISS builds
again, clusters warm-starts), amortised over the default refresh_every.

    python3 -m bench.step_interleaved --n 1e6 --methods faiss lsh lsh_np18 lsh_live \
        shared_neg1024 --rounds 9 --out bench/results/step_interleaved-<date>.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402
from triton_softmax import IndexOptions, ops, recall_at_k  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=float, default=1e6)
    p.add_argument("--N", type=int, default=256)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--num-candidates", type=int, default=512)
    p.add_argument("--num-uniform", type=int, default=512)
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--ab-keep-rows",
        action="store_true",
        help="also time each method with ops.KEEP_ROWS_BYTES = 0 (the backward gathers the "
        "candidate rows again, as before 2026-11-30 21:00), as '<method>/gather_again'",
    )
    harness.add_memory_flag(p)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    harness.apply_memory_flag(args)
    torch.set_num_threads(args.threads)
    n = int(args.n)
    problem = harness.Problem(n, args.d, args.N, torch.float32, "cpu", 0, need_topk=True)
    out = dict(
        kind="step_interleaved",
        env=harness.env_info("cpu"),
        load_avg_1min_before=os.getloadavg()[0],
        n=n, N=args.N, d=args.d, num_candidates=args.num_candidates,
        num_uniform=args.num_uniform, rounds=args.rounds, warmup=args.warmup,
        methods={},
    )  # fmt: skip
    runners = {}
    for m in args.methods:
        runner, status, reason = harness.make_runner(
            m, problem, num_candidates=args.num_candidates, num_uniform=args.num_uniform
        )
        if runner is None:
            out["methods"][m] = dict(status=status, reason=reason)
            continue
        info = dict(status="ok", explain=runner.explain)
        if isinstance(runner, harness.OursRunner) and runner.sampled:
            t0 = time.perf_counter()
            runner.refresh()
            info["refresh_s"] = time.perf_counter() - t0
            # a refresh during training: FAISS builds again; clusters warm-starts
            t0 = time.perf_counter()
            runner.refresh()
            info["warm_refresh_s"] = time.perf_counter() - t0
            with torch.no_grad():
                got = runner.module.index.search(problem.hidden, args.num_candidates - 1)
            info["target_recall"] = float(
                (got == problem.target.unsqueeze(1)).any(1).float().mean()
            )
            info["top10_recall"] = recall_at_k(got, problem.top10)
        for _ in range(args.warmup):
            runner.step()
        runners[m], out["methods"][m] = runner, info
        print(m, info, flush=True)
    keep_bytes = ops.KEEP_ROWS_BYTES
    variants = [(m, m, keep_bytes) for m in runners]
    if args.ab_keep_rows:
        variants += [(f"{m}/gather_again", m, 0) for m in runners]
        for name, m, _ in variants[len(runners) :]:
            out["methods"][name] = dict(out["methods"][m], keep_rows_bytes=0)
    times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
    for r in range(args.rounds):
        for name, m, keep in variants:
            ops.KEEP_ROWS_BYTES = keep
            t0 = time.perf_counter()
            runners[m].step()
            times[name].append(1e3 * (time.perf_counter() - t0))
        ops.KEEP_ROWS_BYTES = keep_bytes
        print(f"round {r + 1}/{args.rounds}", {m: round(v[-1], 1) for m, v in times.items()})
    every = IndexOptions().refresh_every
    out["refresh_every"] = every
    for m, v in times.items():
        info = out["methods"][m]
        info.update(median_ms=statistics.median(v), all_ms=v)
        if "warm_refresh_s" in info:  # the step with its share of a refresh made in training
            info["amortised_ms"] = info["median_ms"] + 1e3 * info["warm_refresh_s"] / every
        print(m, f"{info['median_ms']:.1f} ms", info.get("amortised_ms"), info.get("top10_recall"))
    harness.write_record(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
