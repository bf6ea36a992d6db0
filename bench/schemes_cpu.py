"""Candidate schemes side by side: time per training step and loss error, on this device.

    python3 -m bench.schemes_cpu [--n 100000] [--d 128] [--N 64 256] [--repeats 5]

Same weights, inputs (planted near their targets, bench.harness) and |S| = |T| for every
scheme of SampledSoftmaxLoss(method="lsh"): per_example, shared_samples, batch_union,
bucket_shared (S = the whole union of the query's buckets, no cap). Sparse weight
gradients. Median of `repeats` steps after one warm-up, refresh excluded; |Δloss| is relative to
the exact loss on the same inputs. Writes one JSON file to bench/results/ and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from triton_softmax import SampledSoftmaxLoss, sampled_softmax_cross_entropy

from .harness import env_info, make_inputs, make_weight

SCHEMES = ("per_example", "shared_samples", "batch_union", "bucket_shared")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=float, default=1e5)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--N", type=int, nargs="+", default=[64, 256])
    p.add_argument("--S", type=int, default=256)
    p.add_argument("--T", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    n = int(args.n)
    records = []
    for N in args.N:
        w0 = make_weight(n, args.d, torch.float32, "cpu", 0)
        h, y = make_inputs(w0, N, 0)
        exact = float(sampled_softmax_cross_entropy(h, w0, y, method="full"))
        for scheme in SCHEMES:
            layer = SampledSoftmaxLoss(
                weight=nn.Parameter(w0.clone()),
                method="lsh",
                num_candidates=args.S,
                num_uniform=args.T,
                candidate_scheme=scheme,
                sparse_grad=True,
                refresh_every=1 << 30,
                search_min_mass=None,  # the searching step
            )
            opt = torch.optim.SGD(layer.parameters(), lr=0.0)  # lr 0: same inputs every step
            first = float(layer(h, y).detach())
            times = []
            for _ in range(args.repeats + 1):
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                layer(h, y).backward()
                opt.step()
                times.append(time.perf_counter() - t0)
            rec = dict(
                env_info("cpu"),
                bench="schemes",
                scheme=scheme,
                n=n,
                d=args.d,
                N=N,
                S=args.S,
                T=args.T,
                median_ms=statistics.median(times[1:]) * 1e3,
                min_ms=min(times[1:]) * 1e3,
                loss=first,
                exact_loss=exact,
                loss_rel_diff=abs(first - exact) / abs(exact),
                sparse_grad=True,
                load_avg=list(__import__("os").getloadavg()),
            )
            records.append(rec)
            print(
                f"N={N:5d} {scheme:15s} {rec['median_ms']:9.1f} ms  "
                f"|dloss| {rec['loss_rel_diff']:.2e}",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"schemes_cpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(records, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
