"""Re-run issue 20's table as a new user would: one line per row, what the library does now.

    python3 scripts/issue20_table.py

Runs on the CPU in about a minute (row 7 builds a 2^24 + 1 class sampler). Each row prints
OK or BAD with what happened; BAD means the row still gives what the issue reports.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import triton_softmax as ts
from triton_softmax import SampledSoftmaxLoss, sampled_softmax_cross_entropy
from triton_softmax.loss import sampled_softmax_from_candidates


def _run(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the table reports what a user sees
        return False, f"{type(exc).__name__}: {str(exc)[:110]}"


def row1():
    torch.manual_seed(0)
    n, d = 1000, 16
    h, W = torch.randn(4, d), torch.randn(n, d)
    y = torch.tensor([156, 3, 7, 9], dtype=torch.uint8)
    ref = F.cross_entropy(h @ W.T, y.long(), reduction="none")
    out, ok = [], True
    for method in ("full", "lsh", "faiss"):
        kw = dict(method=method, num_candidates=32, num_uniform=32, reduction="none")
        got = sampled_softmax_cross_entropy(
            h, W, y, generator=torch.Generator().manual_seed(0), **kw
        )
        as_int64 = sampled_softmax_cross_entropy(
            h, W, y.long(), generator=torch.Generator().manual_seed(0), **kw
        )
        ok &= float(got[0]) > 0 and torch.equal(got, as_int64)
        out.append(f"{method} {float(got[0]):.4f}")
    return ok, f"torch {float(ref[0]):.4f} (exact); " + ", ".join(out) + " (= int64 target)"


def row2():
    torch.manual_seed(0)
    res = []
    for dtype, n, label in ((torch.uint8, 300, 255), (torch.int16, 40_000, 32_000)):
        h, W = torch.randn(2, 4), torch.randn(n, 4)
        y = torch.tensor([label, 1], dtype=dtype)
        got = sampled_softmax_cross_entropy(h, W, y, method="full")
        ref = F.cross_entropy(h @ W.T, y.long())
        res.append(abs(float(got) - float(ref)) < 1e-4)
    return all(res), f"uint8 n=300 / int16 n=40000 accepted and equal to torch: {res}"


def row3():
    w = torch.ones(50)
    w[:10] = 0
    try:
        SampledSoftmaxLoss(50, 8, method="lsh", sampler=w)
    except ValueError as exc:
        return True, f"ValueError: {str(exc)[:90]}"
    return False, "accepted (zero-weight classes never drawn: Z biased low)"


def row4():
    torch.manual_seed(0)
    n, d = 1000, 8
    h, W = torch.randn(3, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
    y = torch.tensor([1, 2, 3])
    retrieved = torch.arange(10).expand(3, 10)
    worst = 0.0
    for sampler in ("uniform", "log_uniform", torch.rand(n, dtype=torch.float64) + 0.5):
        gen = torch.Generator().manual_seed(1)
        got = sampled_softmax_from_candidates(
            h, W, y, retrieved, num_uniform=7, reduction="none", sampler=sampler, generator=gen
        )
        # float64 oracle on the same draws: rebuild the candidates with a fresh generator
        from triton_softmax import candidates as C
        from triton_softmax.samplers import make_sampler

        gen = torch.Generator().manual_seed(1)
        if isinstance(sampler, str) and sampler == "uniform":
            ids, lw = C.build_candidates(retrieved, y, n, 7, gen)
            comp = n - 10  # S = the 10 retrieved ids (the target is one of them)
            t_logw = torch.full((3, 7), np.log(comp / 7), dtype=torch.float64)
        else:
            ids, lw = C.build_candidates_q(retrieved, y, n, 7, make_sampler(sampler, n), gen)
            q = make_sampler(sampler, n)
            if isinstance(sampler, str):
                j = ids[:, 11:].double()
                logq = (torch.log1p(1.0 / (j + 1.0)) / np.log(n + 1)).log()
            else:
                p = sampler / sampler.sum()
                logq = p[ids[:, 11:]].log()
            del q
            t_logw = -logq - np.log(7)
            t_logw[ids[:, 11:] < 10] = float("-inf")  # accidental hits of S = {0..9} removed
        # S: weight 1 (log 0); the retrieved copy of the target is a masked (-inf) slot
        s_logw = torch.where(lw[:, :11].isinf(), float("-inf"), 0.0).double()
        logw = torch.cat([s_logw, t_logw], 1)
        z = torch.einsum("nd,nmd->nm", h, W[ids])
        ref = torch.logsumexp(z + logw, 1) - (h * W[y]).sum(1)
        worst = max(worst, float((got - ref).abs().max()))
    return worst <= 1e-12, f"max |float64 loss - float64 oracle| = {worst:.1e}"


def row5():
    torch.manual_seed(0)
    n, d, N = 300, 8, 6
    W = torch.randn(n, d)
    W[17] = float("nan")
    h, y = torch.randn(N, d), torch.randint(0, n, (N,))
    counts = []
    for method in ("full", "lsh", "faiss"):
        loss = sampled_softmax_cross_entropy(
            h, W, y, method=method, num_candidates=16, num_uniform=16, reduction="none"
        )
        counts.append(f"{method} {int(loss.isnan().sum())}/{N}")
    try:
        sampled_softmax_cross_entropy(h, W, y, method="full", validate=True)
        named = "validate=True did not raise"
    except ValueError as exc:
        named = str(exc)[:60]
    ok = all(c.endswith(f"{N}/{N}") for c in counts) and "row 17" in named
    return ok, ", ".join(counts) + f"; validate: {named}"


def row6():
    torch.manual_seed(0)
    h, W, y = torch.randn(4, 8), torch.randn(100, 8), torch.randint(0, 100, (4,))
    loss = sampled_softmax_cross_entropy(h, W, y, method="faiss", num_candidates=1, num_uniform=8)
    return bool(torch.isfinite(loss)), f"loss {float(loss):.4f}"


def row7():
    n = (1 << 24) + 1
    w = torch.rand(n) + 0.1
    W = torch.randn(n, 4) * 0.01
    h, y = torch.randn(2, 4), torch.tensor([0, n - 1])
    ret = torch.randint(0, n, (2, 3))
    loss = sampled_softmax_from_candidates(h, W, y, ret, num_uniform=8, sampler=w)
    return bool(torch.isfinite(loss)), f"n = 2^24 + 1: loss {float(loss):.4f}"


def row8():
    a = SampledSoftmaxLoss(100, 8, method="lsh", seed=3)
    b = SampledSoftmaxLoss(50, 8, method="lsh", seed=5)
    b.steps = 7
    try:
        b.load_state_dict(a.state_dict())
        return False, "loaded without an error"
    except RuntimeError:
        pass
    ok = b.steps == 7 and b.seed == 5
    return ok, f"after the failed load: steps={b.steps} (was 7), seed={b.seed} (was 5)"


def row9():
    out = []
    for rows in (120, 80):
        layer = SampledSoftmaxLoss(100, 8, method="lsh", num_candidates=8, num_uniform=8)
        layer(torch.randn(4, 8), torch.randint(0, 80, (4,)))
        layer.weight.data = torch.randn(rows, 8)
        try:
            layer(torch.randn(4, 8), torch.randint(0, 80, (4,)))
            out.append((False, f"{rows} rows: silent"))
        except ValueError as exc:
            out.append(("100" in str(exc) and str(rows) in str(exc), f"{rows}: ValueError"))
        except Exception as exc:  # noqa: BLE001
            out.append((False, f"{rows} rows: {type(exc).__name__}"))
    return all(o for o, _ in out), "; ".join(m for _, m in out)


def row10():
    torch.manual_seed(0)
    n = 50
    h, W = torch.randn(3, 8), torch.randn(n, 8)
    ret = torch.randint(0, n, (3, 4))
    res = []
    for label, kwargs, y in (
        ("bias n+5", dict(bias=torch.zeros(n + 5)), torch.tensor([1, 2, 3])),
        ("target -1", {}, torch.tensor([-1, 2, 3])),
        ("target n", {}, torch.tensor([n, 2, 3])),
    ):
        try:
            sampled_softmax_from_candidates(h, W, y, ret, num_uniform=4, **kwargs)
            res.append((False, f"{label}: accepted"))
        except ValueError as exc:
            res.append((True, f"{label}: ValueError ({str(exc)[:30]})"))
        except Exception as exc:  # noqa: BLE001
            res.append((False, f"{label}: {type(exc).__name__}"))
    return all(r for r, _ in res), "; ".join(m for _, m in res)


def row11():
    layer = SampledSoftmaxLoss(1000, 8, method="lsh", num_candidates=8, num_uniform=0)
    text = layer.explain()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer(torch.randn(4, 8), torch.randint(0, 1000, (4,)))
    warned = any("num_uniform=0" in str(w.message) for w in caught)
    said = "num_uniform=0" in text
    return warned and said, f"warning: {warned}; explain(): {text[-70:]!r}"


def row12():
    torch.manual_seed(0)
    h = torch.randn(1, 64) * 1.25e14
    W = torch.randn(64, 64) * 1.25e14
    W[0] = h[0]  # logits ~1e30, the target's the largest by far: torch's loss is 0
    y = torch.tensor([0])
    ref = F.cross_entropy(h @ W.T, y)
    out = []
    for method in ("full", "lsh", "faiss"):
        got = sampled_softmax_cross_entropy(h, W, y, method=method, num_candidates=4, num_uniform=4)
        out.append(f"{method} {float(got):.3g}")
    ok = all(abs(float(s.split()[1])) < 1e-3 for s in out)
    return ok, f"torch {float(ref):.3g}; " + ", ".join(out)


def row13():
    h, W, y = torch.randn(3, 4), torch.randn(10, 4), torch.tensor([1, -100, 3])
    got = sampled_softmax_cross_entropy(
        h, W, y, method="full", ignore_index=np.int64(-100), label_smoothing=1.0
    )
    ref = F.cross_entropy(h @ W.T, y, ignore_index=-100, label_smoothing=1.0)
    return abs(float(got) - float(ref)) < 1e-5, f"{float(got):.5f} vs torch {float(ref):.5f}"


ROW14 = """
import faiss  # imported first, faiss-cpu loads its own OpenMP runtime (not torch's)
import torch
from triton_softmax import sampled_softmax_cross_entropy
torch.set_num_threads(1)
h, W, y = torch.randn(4, 8), torch.randn(100, 8), torch.randint(0, 100, (4,))
sampled_softmax_cross_entropy(h, W, y, method="faiss", num_candidates=8, num_uniform=8)
print(faiss.omp_get_max_threads())
"""


def row14():
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", ROW14], cwd=root, capture_output=True, text=True, check=True
    )
    threads = int(out.stdout.split()[-1])
    return (
        threads == 1,
        f"torch.set_num_threads(1) -> faiss threads {threads} (cores {os.cpu_count()})",
    )


def row15():
    from triton_softmax.faiss_index import FaissIndex, default_nlist

    doc = FaissIndex.__doc__
    ok = "4 sqrt" not in doc and "default_nlist" in doc
    return ok, f"default_nlist(117659) = {default_nlist(117_659)}; docstring: {doc.split(';')[1]!r}"


def main() -> None:
    os.environ.setdefault("TRITON_SOFTMAX_IMPL", "auto")
    print(f"triton_softmax from {os.path.dirname(ts.__file__)}; torch {torch.__version__}")
    for i, fn in enumerate(
        [row1, row2, row3, row4, row5, row6, row7, row8]
        + [row9, row10, row11, row12, row13, row14, row15],
        start=1,
    ):
        ok, msg = _run(fn)
        print(f"{i:2d} {'OK ' if ok else 'BAD'} {msg}")


if __name__ == "__main__":
    main()
