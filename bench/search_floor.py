"""How fast could the lsh path's exact list scoring be on this CPU, against FAISS's 4-bit search?

    python3 -m bench.search_floor [--snapshot /tmp/quality/synset-snapshot.pt] [--out F]

The lsh path should be (k-means lists scored with exact logits: index/clusters.py) to be
faster than the faiss path at the same recall. Since 2026-12-01 the faiss path reads 4-bit
PQ codes (`ivfpq`, 32 bytes per row at d = 128) with FAISS's SIMD fast-scan. This script
measures, on one thread, the two numbers that bound any exact scoring of the same share of
classes from below, and sets them beside the measured searches:

- the byte floor: the float rows of every list a batch probes must be read once (the
  clusters search reads each probed list once per batch), at this machine's measured read
  bandwidth (one sum over an fp32 tensor as large as the planted rows: 516 MB at 10^6);
- the FLOP floor: 2 (d + 1) multiply-adds per (query, probed row), at the matrix-product
  rate measured at the search's own shape (queries per list x (d + 1) x list size).

Beside them, the clusters search's parts as it runs them: the list products alone, the
products written into the score buffer (`_list_scores`), and the one `torch.topk` per row
over that buffer.

Problems: the sweep's planted problem at n = 10^6 (256 queries, bench.harness) and, when the
snapshot exists (`python -m bench.candidates_snapshot`), the trained WordNet synset model
(1,024 queries). Both indexes keep their library defaults (clusters: about sqrt(n) lists,
nprobe 16, a contiguous copy of the rows; ivfpq: about sqrt(n) lists, nprobe 16); 63 ids per
query. One JSON record to bench/results/cpu_search_floor-<time>.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from triton_softmax.index.faiss import FaissIndex  # noqa: E402
from triton_softmax.loss import make_index  # noqa: E402

K = 63


def median_ms(fn, repeats: int = 5) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def read_bandwidth_gbs(n: int) -> float:
    """GB/s of one sum over an (129, n) fp32 tensor: the bytes of the planted problem's rows."""
    x = torch.randn(129, n)
    return x.numel() * 4 / median_ms(x.sum) * 1e-6


def mm_gflops(m: int, k: int, n: int) -> float:
    a, b = torch.randn(max(m, 1), k), torch.randn(k, max(n, 1))
    return 2 * a.shape[0] * k * b.shape[1] / median_ms(lambda: a @ b, 9) * 1e-6


def list_products(lsh, h: torch.Tensor, lists: torch.Tensor) -> None:
    """The matrix products of the clusters search alone (no score buffer, no selection):
    each probed list's copied rows against the queries that probe it."""
    p = lists.shape[1]
    flat = lists.flatten()
    by_list = torch.argsort(flat, stable=True)
    pair_q = torch.div(by_list, p, rounding_mode="floor")
    counts = torch.bincount(flat, minlength=lsh.centroids.shape[0]).tolist()
    offs = lsh.offsets.tolist()
    lo = 0
    for lst, cnt in enumerate(counts):
        if cnt:
            rows = lsh.rows_copy_t[:, offs[lst] : offs[lst + 1]]
            torch.mm(h.index_select(0, pair_q[lo : lo + cnt]), rows)
        lo += cnt


def one_problem(name: str, W: torch.Tensor, h: torch.Tensor, bandwidth: float) -> dict:
    n, d = W.shape
    N = h.shape[0]
    lsh = make_index("lsh", n, d, K + 1, seed=0, lsh_generator="clusters")
    lsh.build(W)
    ivfpq = FaissIndex("ivfpq", seed=0).build(W)
    lists = lsh.probe_lists(h)
    sizes = (lsh.offsets[1:] - lsh.offsets[:-1]).float()
    probed_rows = float(sizes[lists].sum())  # (query, row) pairs scored
    distinct = torch.unique(lists)
    rows_read = float(sizes[distinct].sum())  # each probed list read once per batch
    queries_per_list = lists.numel() / max(1, distinct.numel())
    scores = lsh._list_scores(h, lists)  # (N, nprobe x largest list): what the search ranks
    rate = mm_gflops(round(queries_per_list), d + 1, round(float(sizes.mean())))
    flop_floor = 2 * probed_rows * (d + 1) / rate * 1e-6
    byte_floor = rows_read * (d + 1) * 4 / bandwidth * 1e-6
    row = dict(
        problem=name,
        n=n,
        d=d,
        queries=N,
        lists=int(lsh.centroids.shape[0]),
        nprobe=int(lists.shape[1]),
        share_of_lists_read_per_batch=distinct.numel() / lsh.centroids.shape[0],
        share_of_classes_scored_per_query=probed_rows / N / n,
        mm_gflops_at_list_shape=rate,
        lsh_flop_floor_ms=flop_floor,
        lsh_byte_floor_ms=byte_floor,
        lsh_floor_ms=max(flop_floor, byte_floor),
        lsh_products_only_ms=median_ms(lambda: list_products(lsh, h, lists)),
        lsh_list_scores_ms=median_ms(lambda: lsh._list_scores(h, lists)),
        lsh_topk_of_scores_ms=median_ms(lambda: torch.topk(scores, K, dim=1)),
        lsh_search_ms=median_ms(lambda: lsh.search(h, K)),
        faiss_ivfpq_search_ms=median_ms(lambda: ivfpq.search(h, K)),
    )
    print(json.dumps(row))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--snapshot", default="/tmp/quality/synset-snapshot.pt")
    p.add_argument("--n", type=float, default=1e6, help="planted problem: classes")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    load0 = os.getloadavg()[0]
    bandwidth = read_bandwidth_gbs(int(args.n))
    rows = []
    W = harness.make_weight(int(args.n), 128, torch.float32, "cpu", 0)
    h, _ = harness.make_inputs(W, 256, 0)
    rows.append(one_problem("planted", W, h, bandwidth))
    del W
    if Path(args.snapshot).exists():
        snap = torch.load(args.snapshot)
        rows.append(
            one_problem("synset", snap["weight"].float(), snap["hidden"][:1024].float(), bandwidth)
        )
    rec = dict(
        kind="cpu_search_floor",
        time=harness.now_iso(),
        env=harness.env_info("cpu"),
        threads=1,
        read_bandwidth_gbs=bandwidth,
        rows=rows,
        load_avg_1min_before=load0,
        load_avg_1min_after=os.getloadavg()[0],
    )
    out = args.out or Path(__file__).resolve().parent.parent / "bench" / "results" / (
        "cpu_search_floor-" + _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S") + ".json"
    )
    out.write_text(json.dumps(rec, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
