"""One training step per method (forward+backward+SGD), median of 5 after 2 warm-ups, 1 thread.

Compares two source trees of the package side by side (run it alternately from each):
    cd TREE && PYTHONPATH=TREE python3 scripts/step_compare.py LABEL
n = 10^5, N = 256, d = 128, |S| = |T| = 512, fp32, default options; prints one JSON line.
"""

import json, os, statistics, sys, time
import torch

torch.set_num_threads(1)
import triton_softmax
from triton_softmax import SampledSoftmaxLoss

n, N, d = 100_000, 256, 128
torch.manual_seed(0)
h = torch.randn(N, d)
y = torch.randint(0, n, (N,))
out = {"tree": sys.argv[1], "file": triton_softmax.__file__, "load": os.getloadavg()[0]}
for method in ("full", "faiss", "lsh"):
    layer = SampledSoftmaxLoss(
        n,
        d,
        method=method,
        num_candidates=512,
        num_uniform=512,
        sparse_grad=method != "full",
        refresh_every=100,
        seed=0,
    )
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    ts = []
    for i in range(7):
        t0 = time.perf_counter()
        loss = layer(h, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ts.append(time.perf_counter() - t0)
    out[method] = statistics.median(ts[2:]) * 1e3
out["torch"] = None
W = torch.randn(n, d, requires_grad=True)
ts = []
for i in range(7):
    t0 = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(h @ W.T, y)
    loss.backward()
    W.grad = None
    ts.append(time.perf_counter() - t0)
out["torch"] = statistics.median(ts[2:]) * 1e3
print(json.dumps(out))
