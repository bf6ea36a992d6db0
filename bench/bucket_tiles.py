"""Bucket tiles against per-example gathers: forward + backward time, on whatever device is here.

    python3 -m bench.bucket_tiles [--n 100000] [--d 128] [--N 256 1024 4096] [--dtype fp32]

Same weights, inputs (planted near their targets, bench.harness), LSH index (K bits, L
tables) and |T| for every variant of SampledSoftmaxLoss(method="lsh"):

  per_example      top-|S| of the query's buckets, gathered per row (the default scheme)
  bucket_gather    candidate_scheme="bucket_shared", bucket_impl="gather": the whole bucket
                   union per row, gathered, one shared T
  bucket_tiles     candidate_scheme="bucket_shared", bucket_impl="tiles": the same estimator,
                   one dense H_c W_c^T tile per (table, bucket) (Triton on CUDA, twins on CPU)

Dense weight gradients for all (the tiles have no sparse form). Times a forward + backward
(no optimizer step, refresh excluded): CUDA with triton.testing.do_bench, CPU with the median
of --repeats perf_counter runs after a warm-up. Also records the mean union size |S_i|, the
number of non-empty (table, bucket) tiles and their mean query count, and each variant's loss
against the exact one. One JSON file per run in bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

from triton_softmax import SampledSoftmaxLoss, sampled_softmax_cross_entropy

from .harness import env_info, make_inputs, make_weight, time_fn

VARIANTS = {
    "per_example": dict(candidate_scheme="per_example"),
    "bucket_gather": dict(candidate_scheme="bucket_shared", bucket_impl="gather"),
    "bucket_tiles": dict(candidate_scheme="bucket_shared", bucket_impl="tiles"),
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def tile_stats(layer: SampledSoftmaxLoss, h: torch.Tensor) -> dict:
    q = layer.index.query_codes(h).long()
    L = q.shape[1]
    tiles, queries = 0, 0
    for l in range(L):
        codes, counts = torch.unique(q[:, l], return_counts=True)
        sizes = layer.index.offsets[l, codes + 1] - layer.index.offsets[l, codes]
        tiles += int((sizes > 0).sum())
        queries += int(counts[sizes > 0].sum())
    # the union per query in chunks of queries: search_union's (N, L * bucket) top-k took
    # 19.7 GiB at N = 8192 on the H200 run of 2026-11-30
    sizes = torch.cat([(layer.index.search_union(c) >= 0).sum(1) for c in h.split(1024)])
    return dict(
        tiles=tiles,
        queries_per_tile=queries / max(tiles, 1),
        union_mean=float(sizes.float().mean()),
        union_max=int(sizes.max()),
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=float, nargs="+", default=[1e5])
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--N", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--S", type=int, default=256, help="|S| of per_example (with the target)")
    p.add_argument("--T", type=int, default=256)
    p.add_argument("--bits", type=int, default=None, help="K (default: the library's choice)")
    p.add_argument("--tables", type=int, default=8)
    p.add_argument("--dtype", choices=DTYPES, default="fp32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    dev, dtype = args.device, DTYPES[args.dtype]
    records = []
    for n in map(int, args.n):
        w0 = make_weight(n, args.d, dtype, dev, 0)
        for N in args.N:
            h, y = make_inputs(w0, N, 0)
            exact = float(sampled_softmax_cross_entropy(h.float(), w0.float(), y, method="full"))
            stats = None
            for name in args.variants:
                kw = VARIANTS[name]
                layer = SampledSoftmaxLoss(
                    weight=nn.Parameter(w0.clone()),
                    method="lsh",
                    lsh_generator="tables",  # bucket tiles are SimHash tables' scheme
                    num_candidates=args.S,
                    num_uniform=args.T,
                    lsh_bits=args.bits,
                    lsh_tables=args.tables,
                    refresh_every=1 << 30,
                    **kw,
                )
                hh = h.clone().requires_grad_(True)
                loss = float(layer(hh, y).detach())  # builds the index
                stats = stats or tile_stats(layer, h)

                def step(layer=layer, hh=hh, y=y):
                    layer.weight.grad = None
                    hh.grad = None
                    layer(hh, y).backward()

                t = time_fn(step, dev, warmup=1, repeats=args.repeats)
                rec = dict(
                    env_info(dev),
                    bench="bucket_tiles",
                    variant=name,
                    n=n,
                    d=args.d,
                    N=N,
                    S=args.S,
                    T=args.T,
                    K=layer.index.num_bits,
                    L=args.tables,
                    dtype=args.dtype,
                    loss=loss,
                    exact_loss=exact,
                    loss_rel_diff=abs(loss - exact) / abs(exact),
                    load_avg=list(os.getloadavg()),
                    **stats,
                    **t,
                )
                records.append(rec)
                print(
                    f"n={n:8d} N={N:5d} {name:14s} {t['median_ms']:9.2f} ms  "
                    f"|S_i| {stats['union_mean']:7.1f}  tiles {stats['tiles']:6d} "
                    f"({stats['queries_per_tile']:.1f} q/tile)  |dloss| {rec['loss_rel_diff']:.1e}",
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    kind = "cuda" if dev == "cuda" else "cpu"
    path = args.out / f"bucket_tiles_{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(records, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
