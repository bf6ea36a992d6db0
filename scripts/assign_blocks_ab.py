"""The clusters build on a CPU with the assignment in 16,384-row blocks (before session 7)
against 4 MB score blocks (kmeans.ASSIGN_SCORES), interleaved warm builds on the same rows.

    python3 scripts/assign_blocks_ab.py --out bench/results/assign_blocks_ab-<date>.json
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
from triton_softmax.index import kmeans  # noqa: E402
from triton_softmax.index.clusters import ClusterIndex  # noqa: E402

OLD_ROWS = 1 << 14


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=float, default=1e6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    n = int(args.n)
    w = harness.make_weight(n, 128, torch.float32, "cpu", 1)
    index = ClusterIndex(128, live_rerank=False)
    t0 = time.perf_counter()
    index.build(w)
    cold_s = time.perf_counter() - t0
    lists = index.centroids.shape[0]
    blocks = {"16384_rows": OLD_ROWS * lists, "4MB_scores": kmeans.ASSIGN_SCORES}
    rec = dict(
        kind="assign_blocks_ab", env=harness.env_info("cpu"),
        load_avg_1min_before=os.getloadavg()[0], n=n, lists=lists, cold_build_s=cold_s,
        warm_build_s={k: [] for k in blocks}, same_lists=None,
    )  # fmt: skip
    new = kmeans.ASSIGN_SCORES
    assigned = {}
    try:
        for _ in range(args.rounds):
            for name, scores in blocks.items():
                kmeans.ASSIGN_SCORES = scores
                start = index.centroids.clone(), index.assign.clone()
                t0 = time.perf_counter()
                index.build(w)  # warm: the same rows
                rec["warm_build_s"][name].append(time.perf_counter() - t0)
                assigned[name] = index.assign.clone()
                index.centroids, index.assign = start  # each timed build starts alike
    finally:
        kmeans.ASSIGN_SCORES = new
    a, b = assigned.values()
    rec["same_lists"] = float((a == b).float().mean())
    rec["median_s"] = {k: statistics.median(v) for k, v in rec["warm_build_s"].items()}
    print(rec["median_s"], "same lists:", rec["same_lists"])
    harness.write_record(rec, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
