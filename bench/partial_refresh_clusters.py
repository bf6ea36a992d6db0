"""partial_refresh with the k-means lists (lsh_generator="clusters"): what it costs in quality.

A partial refresh re-assigns only the rows with a gradient to the lists' current centroids
(ClusterIndex.update_rows); a full refresh runs `refresh_iters` warm Lloyd iterations over
every row, so the centroids move too. This trains the same teacher problem twice (SGD on sparse
gradients, the same seed and batches), partial_refresh off and on, and reports at each of the
last refreshes: the captured mass of the retrieved S on 512 probe rows (its share of the exact
non-target softmax mass, index.quality.captured_mass), and at the end the exact P@1 on the
probe rows. Writes bench/results/partial-refresh-clusters-cpu-<date>.json.

    python3 -m bench.partial_refresh_clusters [--n 20000] [--steps 120]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from triton_softmax import SampledSoftmaxLoss
from triton_softmax.index.quality import captured_mass, lse_without_target


def teacher(n: int, d: int, rows: int, seed: int = 0):
    """(centres (n, d), x (rows, d), y (rows,)): rows around class centres, labels from a
    tenth of the classes (each seen a few times)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1) * 3
    y = torch.randint(0, n // 10, (rows,), generator=g)
    return centers, centers[y] + 0.5 * torch.randn(rows, d, generator=g), y


def run(partial: bool, args) -> dict:
    torch.manual_seed(0)
    layer = SampledSoftmaxLoss(
        args.n, args.d, method="lsh", lsh_generator="clusters", num_candidates=32,
        num_uniform=32, refresh_every=args.refresh_every, sparse_grad=True,
        partial_refresh=partial, seed=1, search_min_mass=None,
    )  # fmt: skip
    opt = torch.optim.SGD(layer.parameters(), lr=args.lr)
    centers, x, y = teacher(args.n, args.d, args.steps * args.batch)
    with torch.no_grad():  # a partly trained layer: the centres, noisy (the lists have structure)
        g = torch.Generator().manual_seed(2)
        layer.weight.copy_(centers + 0.7 * torch.randn(centers.shape, generator=g))
    hx, hy = x[:512], y[:512]  # probe rows (seen in training): what the index must find
    log, t0 = [], time.perf_counter()
    for step in range(args.steps):
        sl = slice(step * args.batch, (step + 1) * args.batch)
        opt.zero_grad()
        layer(x[sl], y[sl]).backward()
        opt.step()
        if layer.steps % args.refresh_every == 1 and layer.steps > 1:  # just refreshed
            with torch.no_grad():
                ids = layer.index.search(hx, 31)
                lse = lse_without_target(hx, layer.weight, None, hy)
                mass = float(captured_mass(ids, hx, layer.weight, None, hy, lse).mean())
            log.append(dict(step=layer.steps - 1, captured_mass=mass))
    p1 = float((layer.topk(hx, 1, exact=True)[1][:, 0] == hy).float().mean())
    return dict(
        partial_refresh=partial, seconds=time.perf_counter() - t0, p_at_1=p1, log=log,
        refresh_count=layer.refresh_count, refresh_count_partial=layer.refresh_count_partial,
    )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--refresh-every", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    runs = [run(False, args), run(True, args)]
    for r in runs:
        last = [round(e["captured_mass"], 4) for e in r["log"][-4:]]
        print(
            f"partial_refresh={r['partial_refresh']}: P@1 {r['p_at_1']:.3f}, captured mass at "
            f"the last refreshes {last}, refreshes {r['refresh_count']} "
            f"({r['refresh_count_partial']} partial), {r['seconds']:.1f} s"
        )
    record = dict(
        what="partial_refresh on the clusters generator vs full warm refreshes",
        machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} vCPUs (shared)",
        load=os.getloadavg()[0], torch=torch.__version__, args=vars(args), runs=runs,
        date=time.strftime("%Y-%m-%d"),
    )  # fmt: skip
    out = args.out or f"bench/results/partial-refresh-clusters-cpu-{time.strftime('%Y%m%d')}.json"
    with open(out, "w") as f:
        json.dump(record, f, indent=1)
    print("saved", out)


if __name__ == "__main__":
    main()
