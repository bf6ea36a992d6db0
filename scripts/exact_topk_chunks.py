"""exact_topk's block width on a CPU: plain h @ W.T + topk against exact_topk with blocks of
2^20 / N, 2^22 / N, 4,096 and 1,024 classes, N = 64 ... 4096 queries, n = 120,000, d = 128,
k = 10, one thread, medians of interleaved rounds.

    python3 scripts/exact_topk_chunks.py --out bench/results/exact_topk_chunks-<date>.json
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
from triton_softmax import exact_topk  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=float, default=120_000)
    p.add_argument("--N", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    W = harness.make_weight(int(args.n), 128, torch.float32, "cpu", 1)
    rec = dict(
        kind="exact_topk_chunks", n=int(args.n), d=128, k=10, env=harness.env_info("cpu"),
        load_avg_1min_before=os.getloadavg()[0], cases=[],
    )  # fmt: skip
    for N in args.N:
        h = torch.randn(N, 128, generator=torch.Generator().manual_seed(2))
        fns = {"plain_matmul_topk": lambda h=h: torch.topk(h @ W.T, 10, dim=1)}
        for c in sorted({(1 << 20) // N, (1 << 22) // N, 4096, 1024}):
            fns[f"chunk_{c}"] = lambda c=c, h=h: exact_topk(h, W, 10, chunk=c)
        times: dict[str, list[float]] = {name: [] for name in fns}
        for f in fns.values():
            f()
        for _ in range(args.repeats):
            for name, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[name].append(1e3 * (time.perf_counter() - t0))
        case = dict(N=N, median_ms={k: statistics.median(v) for k, v in times.items()})
        print(case, flush=True)
        rec["cases"].append(case)
    harness.write_record(rec, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
