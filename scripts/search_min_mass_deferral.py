"""What search_min_mass's build deferral saves at n = 1e6 on an untrained layer.

    python3 scripts/search_min_mass_deferral.py --out bench/results/FILE.json

200 training steps (lsh, one shared T of 1,024, |S| = 64, SGD on a sparse gradient, two
scheduled refreshes) with this checkout's deferral, then the same steps with every scheduled
build made (the before_build hooks removed), one thread; wall seconds, refresh seconds,
builds made and deferred.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402
from triton_softmax import SampledSoftmaxLoss  # noqa: E402


def run(n: int, d: int, N: int, steps: int, defer: bool) -> dict:
    W = nn.Parameter(harness.make_weight(n, d, torch.float32, "cpu", 0))
    gen = torch.Generator().manual_seed(0)
    layer = SampledSoftmaxLoss(
        weight=W,
        method="lsh",
        num_candidates=64,
        num_uniform=1024,
        candidate_scheme="shared_samples",
        sparse_grad=True,
        search_min_mass=0.3,
    )
    if not defer:
        layer.manager.before_build.clear()
    opt = torch.optim.SGD([W], lr=0.1)
    t0 = time.perf_counter()
    for _ in range(steps):
        h = torch.randn(N, d, generator=gen)
        y = torch.randint(n, (N,), generator=gen)
        opt.zero_grad(set_to_none=True)
        layer(h, y).backward()
        opt.step()
    st = layer.stats()
    return dict(
        seconds=time.perf_counter() - t0,
        refresh_seconds=st["total_refresh_seconds"],
        builds=st["refresh_count"],
        builds_deferred=st["index_builds_deferred"],
        search_on=st["search_on"],
        mass_ceiling=st["mass_ceiling"],
        captured_mass=st["captured_mass"],
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=float, default=1e6)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    n, d, N = int(args.n), 128, 256
    out = dict(
        kind="search_min_mass_deferral",
        n=n, d=d, N=N, steps=args.steps,
        env=harness.env_info("cpu"),
        load_avg_1min_before=os.getloadavg()[0],
    )  # fmt: skip
    for name, defer in (("deferred", True), ("every_build_made", False)):
        out[name] = run(n, d, N, args.steps, defer)
        print(name, json.dumps(out[name]), flush=True)
    harness.write_record(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
