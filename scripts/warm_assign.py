"""A warm clusters refresh: the assignment among WARM_NEIGHBOURS centroids near each row's
old list against the assignment to all centroids, on the same warm-started centroids.

For each problem: a cold build, a drift of the rows (relative size --drift per refresh, as
SGD moves them), then a warm refresh; reports the share of rows given the same list by both
assignments, the share whose score to the chosen centroid is within 1e-6 of the best one,
the time of each assignment, and the warm build's time with each width; on the planted
problem also the recall of the exact top-10 among the 511 each warm-built index retrieves for
256 planted queries (bench.sweep's measure).

    python3 scripts/warm_assign.py --out bench/results/warm_assign-<date>.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402
from triton_softmax import exact_topk, recall_at_k  # noqa: E402
from triton_softmax.index import clusters  # noqa: E402
from triton_softmax.index.kmeans import (  # noqa: E402
    assign_among_neighbours,
    assign_nearest,
    spherical_lloyd,
)


def clustered_rows(n: int, d: int, groups: int, seed: int) -> torch.Tensor:
    """Rows around `groups` random centres (a trained output layer's confusable groups)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(groups, d, generator=gen)
    pick = torch.randint(groups, (n,), generator=gen)
    return centres[pick] + 0.5 * torch.randn(n, d, generator=gen)


def case(name: str, w0: torch.Tensor, drift: float, widths: list[int], recall: bool) -> dict:
    index = clusters.ClusterIndex(w0.shape[1], live_rerank=False)
    t0 = time.perf_counter()
    index.build(w0)
    cold_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(1)
    scale = drift * w0.norm(dim=1, keepdim=True) / w0.shape[1] ** 0.5
    w = w0 + scale * torch.randn(w0.shape, generator=gen)
    keys = index._keys(index._rows(w, None)[index.rows])
    c = min(index.num_lists or clusters.default_num_lists(keys.shape[0]), keys.shape[0])
    cent = spherical_lloyd(keys, index.centroids[:c].clone(), index.refresh_iters, gen)
    t0 = time.perf_counter()
    full = assign_nearest(keys, cent)
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    near = assign_among_neighbours(
        keys, cent, index.assign, index.centroids, clusters.WARM_NEIGHBOURS
    )
    near_s = time.perf_counter() - t0
    best = (keys * cent[full]).sum(1)
    got = (keys * cent[near]).sum(1)
    warm, recall10 = {}, {}
    if recall:
        h, _ = harness.make_inputs(w, 256, 0)
        top10 = exact_topk(h, w, 10)[1]
    for width in [*widths, 1 << 30]:
        label = str(width) if width < 1 << 30 else "all"
        again = clusters.ClusterIndex(w.shape[1], live_rerank=False).build(w0)
        old = clusters.WARM_NEIGHBOURS
        clusters.WARM_NEIGHBOURS = width
        try:
            t0 = time.perf_counter()
            again.build(w)
            warm[label] = time.perf_counter() - t0
        finally:
            clusters.WARM_NEIGHBOURS = old
        if recall:
            recall10[label] = recall_at_k(again.search(h, 511), top10)
        print(label, warm[label], recall10.get(label), flush=True)
    out = dict(
        case=name, n=w.shape[0], d=w.shape[1], lists=c, drift=drift,
        width=clusters.WARM_NEIGHBOURS, cold_build_s=cold_s,
        same_list=float((near == full).float().mean()),
        same_score=float(((best - got) <= 1e-6).float().mean()),
        mean_score_loss=float((best - got).mean()),
        assign_all_s=full_s, assign_neighbours_s=near_s, warm_build_s=warm,
        warm_recall_top10=recall10 or None,
    )  # fmt: skip
    print(out, flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--drift", type=float, default=0.05)
    p.add_argument("--widths", type=int, nargs="+", default=[32, 128])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rec = dict(
        kind="warm_assign",
        env=harness.env_info("cpu"),
        load_avg_1min_before=os.getloadavg()[0],
        cases=[
            case(
                "clustered-117659",
                clustered_rows(117_659, 128, 2_000, 0),
                args.drift,
                args.widths,
                recall=False,
            ),
            case(
                "planted-1e6",
                harness.make_weight(1_000_000, 128, torch.float32, "cpu", 1),
                args.drift,
                args.widths,
                recall=True,
            ),
        ],
    )
    harness.write_record(rec, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
