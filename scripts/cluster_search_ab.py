"""The clusters search on a CPU: this checkout's ClusterIndex against the one of --base
(default 1d9ea15, before the one-buffer search; session 7 measured against 0b86be3), live
rows and a copy of the rows (rerank_copy), interleaved rounds on the same weights and
queries; checks the ids agree.

    python3 scripts/cluster_search_ab.py --out bench/results/cluster_search_ab-<date>.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import harness  # noqa: E402
from triton_softmax.index.clusters import ClusterIndex  # noqa: E402


def old_cluster_index(base: str):
    """ClusterIndex as it was at `base`, loaded beside this checkout's package."""
    src = subprocess.run(
        ["git", "show", f"{base}:triton_softmax/index/clusters.py"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "clusters_base.py"
    path.write_text(src)
    name = "triton_softmax.index._clusters_base"  # its relative imports resolve in the package
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod.ClusterIndex


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default="1d9ea15")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    Old = old_cluster_index(args.base)
    out = dict(
        kind="cluster_search_ab",
        base=args.base,
        env=harness.env_info("cpu"),
        load_avg_1min_before=os.getloadavg()[0],
        cases=[],
    )
    for n, N, k in [(117_659, 1024, 63), (1_000_000, 256, 511)]:
        W = harness.make_weight(n, 128, torch.float32, "cpu", 1)
        h = torch.randn(N, 128, generator=torch.Generator().manual_seed(3))
        idx = {
            "now_live": ClusterIndex(128).build(W),
            "now_copy": ClusterIndex(128, live_rerank=False).build(W),
            "base_live": Old(128).build(W),
            "base_copy": Old(128, live_rerank=False).build(W),
        }
        ref = idx["now_live"].search(h, k)
        got = {name: x.search(h, k) for name, x in idx.items()}
        same = {name: bool(torch.equal(v, ref)) for name, v in got.items()}
        # near-tied logits may come out in another order (another summation order)
        same_sets = {
            name: sum(set(v[i].tolist()) == set(ref[i].tolist()) for i in range(N)) / N
            for name, v in got.items()
        }
        times: dict[str, list[float]] = {name: [] for name in idx}
        for _ in range(args.repeats):
            for name, x in idx.items():
                t0 = time.perf_counter()
                x.search(h, k)
                times[name].append(1e3 * (time.perf_counter() - t0))
        case = dict(
            n=n, N=N, k=k, lists=int(idx["now_live"].centroids.shape[0]),
            nprobe=idx["now_live"].effective_nprobe, same_ids_as_now_live=same,
            rows_with_the_same_id_set=same_sets,
            median_ms={name: statistics.median(v) for name, v in times.items()},
        )  # fmt: skip
        print(json.dumps(case), flush=True)
        out["cases"].append(case)
        del idx, W
    harness.write_record(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
