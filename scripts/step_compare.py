"""One training step per method (forward + backward + SGD), median of 5 after 2 warm-ups.

Compares two source trees of the package side by side (run it alternately from each):

    cd TREE && PYTHONPATH=TREE python3 scripts/step_compare.py LABEL [N_CLASSES [METHOD ...]]

n = 10^5 (or N_CLASSES), methods full faiss lsh (or those given) and plain torch, N = 256,
d = 128, |S| = |T| = 512, fp32, 1 thread, default options; prints one JSON
line with the tree's label, the package file it imported, the load average and ms per step.
"""

import json
import os
import statistics
import sys
import time

import torch

import triton_softmax
from triton_softmax import SampledSoftmaxLoss

BATCH, DIM = 256, 128


def median_ms(step, repeats: int = 7, warmup: int = 2) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[warmup:]) * 1e3


def main() -> None:
    n = int(float(sys.argv[2])) if len(sys.argv) > 2 else 100_000
    methods = sys.argv[3:] or ["full", "faiss", "lsh"]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    h = torch.randn(BATCH, DIM)
    y = torch.randint(0, n, (BATCH,))
    out = {"tree": sys.argv[1], "file": triton_softmax.__file__, "load": os.getloadavg()[0]}
    out["n"] = n
    for method in methods:
        layer = SampledSoftmaxLoss(
            n, DIM, method=method, num_candidates=512, num_uniform=512,
            sparse_grad=method != "full", refresh_every=100, seed=0,
        )  # fmt: skip
        opt = torch.optim.SGD(layer.parameters(), lr=0.1)

        def step(layer=layer, opt=opt):
            opt.zero_grad()
            layer(h, y).backward()
            opt.step()

        out[method] = median_ms(step)
    W = torch.randn(n, DIM, requires_grad=True)

    def torch_step():
        torch.nn.functional.cross_entropy(h @ W.T, y).backward()
        W.grad = None

    out["torch"] = median_ms(torch_step)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
