"""row_dots on a CPU: logits of gathered rows (N, M, d) against their h (N, d), computed as
(N, 1, d) x (N, d, M) (row_dots, since session 10) against the (N, M, d) x (N, d, 1) batched
matrix-vector form used before and an elementwise multiply-sum; one thread, fp32, medians of
interleaved rounds, at the shapes of the twins (M = |S| + 1), the reranks (M = a union) and
the captured-mass probe.

    python3 scripts/row_dots_ab.py --out bench/results/row_dots_ab-<date>.json
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
from triton_softmax.reference.sampled_logits import row_dots  # noqa: E402

SHAPES = ((256, 65, 128), (1024, 65, 128), (8, 16_000, 128), (64, 1_024, 64), (2, 300_000, 128))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    rec = dict(
        kind="row_dots_ab", env=harness.env_info("cpu"),
        load_avg_1min_before=os.getloadavg()[0], cases=[],
    )  # fmt: skip
    for N, M, d in SHAPES:
        rows, h = torch.randn(N, M, d, generator=g), torch.randn(N, d, generator=g)
        fns = {
            "row_dots": lambda r=rows, h=h: row_dots(r, h),
            "bmm_matrix_vector": lambda r=rows, h=h: torch.bmm(r, h.unsqueeze(2)).squeeze(2),
            "mul_sum": lambda r=rows, h=h: (r * h.unsqueeze(1)).sum(-1),
        }
        err = float((fns["row_dots"]() - fns["bmm_matrix_vector"]()).abs().max())
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.repeats):
            for name, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[name].append(1e3 * (time.perf_counter() - t0))
        case = dict(
            N=N, M=M, d=d, max_abs_diff=err,
            median_ms={k: statistics.median(v) for k, v in times.items()},
        )  # fmt: skip
        print(case, flush=True)
        rec["cases"].append(case)
    rec["load_avg_1min_after"] = os.getloadavg()[0]
    harness.write_record(rec, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
