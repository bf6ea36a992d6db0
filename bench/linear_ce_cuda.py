"""The exact path on CUDA: fused linear + cross-entropy kernels against the tools users pick.

    python bench/linear_ce_cuda.py                          # N=8192, d 1024 4096, n 32K..1M, bf16
    python bench/linear_ce_cuda.py --d 1024 --n 32768 131072 --impl ours plain
    python bench/linear_ce_cuda.py --out bench/results/my_run.json
    python bench/linear_ce_cuda.py --d 1024 --n 131072 262144 --phases   # + forward, backward

One step = forward + backward of the mean cross-entropy of hidden @ weight.T (bf16 inputs,
gradients for hidden and weight), timed with triton.testing.do_bench (median, p20, p80 in ms,
after one untimed call that compiles and autotunes). Peak memory is
torch.cuda.max_memory_allocated over one step; `peak_extra_bytes` is that peak less what was
allocated before the step (inputs), i.e. the step's own working memory and gradients.
With --phases each record also has `fwd_ms` (the forward, graph kept) and `bwd_ms` (the
backward alone, repeated on one kept graph with retain_graph=True; gradients reset before
each), and `fwd_peak_bytes`. Liger computes its gradients inside its forward: its bwd_ms is
only the scaling of those, and its fwd_ms carries the work. Where a backward cannot be
repeated on one graph, bwd_ms is absent and `phase_error` says why.

Implementations (`--impl`):
  ours          triton_softmax.sampled_softmax_cross_entropy(method="full") through the
                library's autograd Function: on CUDA the chunked kernels (the default: LSE pass,
                per class chunk a GEMM with a dz epilogue, dW and dh by torch.mm; dW written
                once in the weight's dtype)
  ours-fused    the same with TRITON_SOFTMAX_EXACT_KERNEL=fused: the one-pass fused kernels
                (dW/dh partials by atomics, dW in fp32 then cast)
  ours-chunked-kernels  linear_ce_chunked_fwd + linear_ce_chunked_bwd called directly
  ours-kernels  linear_ce_fwd + linear_ce_bwd (fused) called directly (dh_mode="atomic")
  ours-2pass    the same with dh_mode="two_pass" (deterministic)
  plain         F.cross_entropy(h @ W.T, y): materialises the (N, n) logits
  cce           Cut Cross-Entropy linear_cross_entropy (its defaults, incl. filter_eps="auto")
  liger         Liger-Kernel LigerFusedLinearCrossEntropyLoss
A peer that does not import is recorded with status "skipped" and the reason; a size that
runs out of memory is recorded with status "oom". Records (device name, versions, sizes, ms,
peak bytes) go to bench/results/linear_ce_cuda-<device>-<time>.json. Needs a CUDA device:
without one it says so and exits 0 having measured nothing.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
IMPLS = (
    "ours",
    "ours-fused",
    "ours-chunked-kernels",
    "ours-kernels",
    "ours-2pass",
    "plain",
    "cce",
    "liger",
)
# the implementations that run the library with its exact-path kernel choice set
EXACT_KERNEL = {"ours": "chunked", "ours-fused": "fused"}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _import_project():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import triton_softmax
    from bench import peers
    from triton_softmax import kernels

    return triton_softmax, peers, kernels


class Phases:
    """step() = forward + backward; fwd() runs and keeps a forward; bwd() the backward of
    the kept forward (repeatable)."""

    def __init__(self, step, fwd, bwd):
        self.step, self.fwd, self.bwd = step, fwd, bwd


def make_step(impl, h, W, y, project):
    """(Phases, None) or (None, reason it cannot run)."""
    triton_softmax, peers, kernels = project
    N = h.shape[0]
    kept = {}
    if impl in EXACT_KERNEL:

        def loss_fn(h_, w_, y_):
            return triton_softmax.sampled_softmax_cross_entropy(h_, w_, y_, method="full")

    elif impl in ("ours-kernels", "ours-2pass", "ours-chunked-kernels"):
        g = torch.full((N,), 1.0 / N, device=h.device)
        if impl == "ours-chunked-kernels":
            fwd_k, bwd_k, kw = kernels.linear_ce_chunked_fwd, kernels.linear_ce_chunked_bwd, {}
        else:
            mode = "atomic" if impl == "ours-kernels" else "two_pass"
            fwd_k, bwd_k, kw = kernels.linear_ce_fwd, kernels.linear_ce_bwd, {"dh_mode": mode}

        def fwd():
            kept["lse"] = fwd_k(h, W, None, y)[1]

        def bwd():
            return bwd_k(g, h, W, None, y, kept["lse"], **kw)

        def step():
            fwd()
            return bwd()

        return Phases(step, fwd, bwd), None
    elif impl == "plain":
        loss_fn = peers.plain_torch_loss
    else:
        loss_fn, reason = peers.load_peer(impl, "cuda")
        if loss_fn is None:
            return None, f"skipped: not importable ({reason})"

    hl = h.detach().requires_grad_()
    wl = W.detach().requires_grad_()

    def step():
        hl.grad = wl.grad = None
        loss_fn(hl, wl, y).backward()

    def fwd():
        kept.pop("loss", None)  # the previous graph goes before the next is built
        kept["loss"] = loss_fn(hl, wl, y)

    def bwd():
        hl.grad = wl.grad = None
        kept["loss"].backward(retain_graph=True)

    return Phases(step, fwd, bwd), None


def measure(step, warmup_ms, rep_ms):
    """(median, p20, p80 ms, peak bytes, peak bytes above the pre-step allocation)."""
    import triton.testing

    step()  # compile + autotune outside the timing and the memory peak
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    med, lo, hi = triton.testing.do_bench(
        step, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8]
    )
    return med, lo, hi, peak, peak - base


def measure_phases(phases: Phases, warmup_ms, rep_ms) -> dict:
    """fwd_ms, fwd_peak_bytes and bwd_ms (median ms; see the module docstring)."""
    import triton.testing

    out = {}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    phases.fwd()
    torch.cuda.synchronize()
    out["fwd_peak_bytes"] = torch.cuda.max_memory_allocated()
    out["fwd_ms"] = triton.testing.do_bench(phases.fwd, warmup=warmup_ms, rep=rep_ms)
    try:
        phases.bwd()
        out["bwd_ms"] = triton.testing.do_bench(phases.bwd, warmup=warmup_ms, rep=rep_ms)
    except Exception as exc:  # e.g. a peer whose backward frees what it saved
        out["phase_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def sanity(project, dtype):
    """Max |loss - plain torch| at a small size, so a timing of a wrong kernel is visible."""
    triton_softmax, peers, _ = project
    gen = torch.Generator(device="cuda").manual_seed(1)
    h = torch.randn(512, 256, device="cuda", generator=gen).to(dtype)
    W = (torch.randn(5003, 256, device="cuda", generator=gen) / 16).to(dtype)
    y = torch.randint(0, 5003, (512,), device="cuda", generator=gen)
    ours = triton_softmax.sampled_softmax_cross_entropy(h, W, y, method="full")
    ref = peers.plain_torch_loss(h.float(), W.float(), y)
    return float((ours.float() - ref).abs())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--N", type=int, default=8192)
    ap.add_argument("--d", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--n", type=int, nargs="+", default=[32768, 131072, 262144, 1_000_000])
    ap.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    ap.add_argument("--impl", nargs="+", choices=IMPLS, default=list(IMPLS))
    ap.add_argument("--warmup-ms", type=float, default=25)
    ap.add_argument("--rep-ms", type=float, default=200)
    ap.add_argument("--phases", action="store_true", help="also time forward and backward apart")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print(
            "bench/linear_ce_cuda.py: no CUDA device (torch.cuda.is_available() is False); "
            "these are GPU timings, so nothing was measured and nothing was written."
        )
        return 0
    if os.environ.get("TRITON_INTERPRET") == "1":
        print(
            "bench/linear_ce_cuda.py: TRITON_INTERPRET=1 would time the interpreter; unset it. "
            "Nothing was measured."
        )
        return 0
    import triton

    project = _import_project()
    dtype = DTYPES[args.dtype]
    device = torch.cuda.get_device_name()
    meta = dict(
        device=device,
        torch=torch.__version__,
        triton=triton.__version__,
        cuda=torch.version.cuda,
        python=platform.python_version(),
        dtype=args.dtype,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    for dist_name in ("cut-cross-entropy", "liger-kernel"):
        try:
            meta[dist_name] = importlib.metadata.version(dist_name)
        except importlib.metadata.PackageNotFoundError:
            meta[dist_name] = None
    err = sanity(project, dtype)
    print(f"{device}: |loss - plain torch| at N=512, n=5003, d=256: {err:.2e}")
    records = [dict(meta, impl="ours", kind="sanity", abs_loss_err=err)]
    out = args.out or RESULTS / (
        f"linear_ce_cuda-{device.replace(' ', '_')}-"
        f"{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)

    for d in args.d:
        for n in args.n:
            gen = torch.Generator(device="cuda").manual_seed(0)
            h = torch.randn(args.N, d, device="cuda", generator=gen).to(dtype)
            W = (torch.randn(n, d, device="cuda", generator=gen) / d**0.5).to(dtype)
            y = torch.randint(0, n, (args.N,), device="cuda", generator=gen)
            sizes = dict(N=args.N, d=d, n=n)
            for impl in args.impl:
                rec = dict(meta, impl=impl, kind="fwd+bwd", **sizes)
                if impl in EXACT_KERNEL:
                    rec["exact_kernel"] = EXACT_KERNEL[impl]
                    os.environ["TRITON_SOFTMAX_EXACT_KERNEL"] = EXACT_KERNEL[impl]
                phases = None
                try:
                    phases, reason = make_step(impl, h, W, y, project)
                    if phases is None:
                        rec.update(status="skipped", reason=reason)
                    else:
                        med, lo, hi, peak, extra = measure(phases.step, args.warmup_ms, args.rep_ms)
                        rec.update(
                            status="ok",
                            ms=med,
                            ms_p20=lo,
                            ms_p80=hi,
                            peak_bytes=peak,
                            peak_extra_bytes=extra,
                        )
                        if args.phases:
                            rec.update(measure_phases(phases, args.warmup_ms, args.rep_ms))
                except torch.cuda.OutOfMemoryError as exc:
                    rec.update(status="oom", reason=str(exc).splitlines()[0][:200])
                except Exception as exc:
                    rec.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:300])
                finally:
                    del phases
                    os.environ.pop("TRITON_SOFTMAX_EXACT_KERNEL", None)
                    torch.cuda.empty_cache()
                records.append(rec)
                if rec["status"] == "ok":
                    split = ""
                    if "fwd_ms" in rec:
                        bwd = f"{rec['bwd_ms']:8.2f}" if "bwd_ms" in rec else "     n/a"
                        split = f"  fwd {rec['fwd_ms']:8.2f}  bwd {bwd}"
                    print(
                        f"d={d:5d} n={n:8d} {impl:20s} {rec['ms']:9.2f} ms{split}  "
                        f"peak {rec['peak_bytes'] / 2**30:6.2f} GiB "
                        f"(+{rec['peak_extra_bytes'] / 2**30:.2f})",
                        flush=True,
                    )
                else:
                    print(f"d={d:5d} n={n:8d} {impl:20s} {rec['status']}: {rec.get('reason')}")
                out.write_text(json.dumps(records, indent=1))  # partial results survive a crash
            del h, W, y
            torch.cuda.empty_cache()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
