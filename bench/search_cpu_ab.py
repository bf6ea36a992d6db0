"""ClusterIndex.search on a CPU, two checkouts interleaved in one run (before / after a change).

    python3 -m bench.search_cpu_ab --trees OLD_CHECKOUT . --rounds 3 --out FILE

Each round runs one child process per tree (PYTHONPATH = that tree), the order swapped every
round, so both see the same machine load and neither always runs first. The child builds the
lsh default's ClusterIndex over the sweep's planted problem (bench.harness), times
index.search (median of --repeats, perf_counter, one torch thread) and reports the recall of
the exact top-10 and a hash of the returned ids. The record: per tree the median of its
rounds' medians, the ratio after / before, and whether the ids were identical.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, statistics, sys, time, torch
torch.set_num_threads(1)
from bench.harness import make_inputs, make_weight
from triton_softmax.index.clusters import ClusterIndex
from triton_softmax.retrieval import exact_topk
n, N, d, k, repeats = (int(float(a)) for a in sys.argv[1:6])
W = make_weight(n, d, torch.float32, "cpu", 0)
h, _ = make_inputs(W, N, 0)
index = ClusterIndex(d).build(W)
ids = index.search(h, k)
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    index.search(h, k)
    times.append(time.perf_counter() - t0)
exact = exact_topk(h, W, 10)[1]
recall = float((ids.unsqueeze(2) == exact.unsqueeze(1)).any(1).float().mean())
print(json.dumps(dict(median_ms=1e3 * statistics.median(times), recall_top10=recall,
                      ids_hash=hash(tuple(ids.flatten().tolist())))))
"""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", nargs=2, required=True, help="before, after")
    p.add_argument("--n", type=float, default=2e5)
    p.add_argument("--N", type=int, default=256)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--k", type=int, default=511)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    runs: dict[str, list[dict]] = {t: [] for t in args.trees}
    for r in range(args.rounds):
        for tree in args.trees if r % 2 == 0 else args.trees[::-1]:  # neither always first
            env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()), PYTHONHASHSEED="0")
            env.pop("TRITON_INTERPRET", None)
            sizes = [str(v) for v in (args.n, args.N, args.d, args.k, args.repeats)]
            out = subprocess.run(
                [sys.executable, "-c", CHILD, *sizes],
                cwd=tree,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            runs[tree].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r} {tree}: {runs[tree][-1]}", flush=True)
    before, after = (statistics.median(x["median_ms"] for x in runs[t]) for t in args.trees)
    rec = dict(
        kind="search_cpu_ab",
        machine=cpu_model() + f", {os.cpu_count()} vCPUs shared (load: uptime_at_end)",
        uptime_at_end=subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        n=int(args.n),
        N=args.N,
        d=args.d,
        k=args.k,
        trees=args.trees,
        runs=runs,
        median_ms_before=before,
        median_ms_after=after,
        ratio_after_over_before=after / before,
        same_ids=len({x["ids_hash"] for t in args.trees for x in runs[t]}) == 1,
    )
    print(json.dumps({k: v for k, v in rec.items() if k != "runs"}, indent=1))
    if args.out:
        args.out.write_text(json.dumps(rec, indent=1))
        print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
