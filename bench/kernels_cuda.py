"""Each Triton kernel against its PyTorch twin on CUDA: time, and bytes moved per second.

    python bench/kernels_cuda.py [--dtype bf16] [--N 8192] [--d 512] [--C 256 1024 4096]
                                 [--n 100000 1000000] [--out bench/results/...json]

Times are triton.testing.do_bench medians (ms) after one untimed call (which also runs the
autotuner). `bytes` is what the operation must move at the least (its inputs read once, its
outputs written once; atomics count a read and a write), so `GBps` = bytes / time is the
achieved bandwidth to set against `copy_GBps`, the device's measured device-to-device copy
bandwidth in the same run. A twin that runs out of memory (it materialises the gathered
(N, C, d) rows) is recorded with "error". Needs a CUDA device; exits with a message otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
L_TABLES = 8


def _bench(fn, warmup=25, rep=100):
    import triton.testing

    fn()  # compile + autotune outside the timing
    torch.cuda.synchronize()
    med, lo, hi = triton.testing.do_bench(fn, warmup=warmup, rep=rep, quantiles=[0.5, 0.2, 0.8])
    return med, lo, hi


def copy_bandwidth_gbps() -> float:
    src = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")  # 256 MiB
    dst = torch.empty_like(src)
    med, _, _ = _bench(lambda: dst.copy_(src))
    return 2 * src.numel() / (med * 1e-3) / 1e9


def problem(N, n, d, C, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    h = (torch.randn(N, d, device="cuda", generator=g) * 0.5).to(dtype)
    W = (torch.randn(n, d, device="cuda", generator=g) * 0.5).to(dtype)
    ids = torch.randint(0, n, (N, C), device="cuda", generator=g)
    logw = torch.zeros(N, C, device="cuda")
    logw[:, C - C // 16 :] = float("-inf")  # 1/16 padding, as unfilled S slots
    target = torch.randint(0, n, (N,), device="cuda", generator=g)
    return h, W, ids, logw, target


def cases(N, n, d, C, dtype):
    """(name, kernel fn, twin fn, bytes) for every kernel at one size."""
    from triton_softmax import estimator as est
    from triton_softmax import kernels as k
    from triton_softmax import lsh

    es = torch.empty((), dtype=dtype).element_size()
    h, W, ids, logw, target = problem(N, n, d, C, dtype)
    live = C - C // 16
    M1 = C + 1
    loss, lse = k.sampled_logits_fwd(h, W, None, ids, logw, target)
    grad = torch.ones(N, device="cuda")
    coef, ids1, _ = k.sampled_logits_bwd(grad, h, W, None, ids, logw, target, lse)

    K = lsh.default_num_bits(n, L_TABLES, C)
    B = lsh.default_max_per_bucket(C, L_TABLES)
    planes = lsh.make_hyperplanes(d, K, L_TABLES, seed=0, device="cuda")
    max_norm = lsh.max_row_norm(W, None)
    key_codes = k.simhash_codes(W, planes, None, max_norm)
    sorted_ids, offsets = lsh.bucket_table_ref(key_codes, K)
    q_codes = k.simhash_codes(h, planes, None, None)
    # bytes a lookup must read: the ids actually present in each query's buckets (<= B)
    lens = (offsets[:, 1:] - offsets[:, :-1]).clamp(max=B)
    read_ids = int(lens.gather(1, q_codes.long().T).sum()) * 4

    gathered = N * live * d * es  # the candidate rows, read once
    ids_bytes = N * C * (8 + 4)  # cand_ids int64 + logw fp32
    out = []
    out.append(
        (
            "simhash_keys",
            lambda: k.simhash_codes(W, planes, None, max_norm),
            lambda: lsh.simhash_codes_ref(W, planes, None, max_norm),
            n * d * es + n * L_TABLES * 4,
        )
    )
    out.append(
        (
            "simhash_queries",
            lambda: k.simhash_codes(h, planes, None, None),
            lambda: lsh.simhash_codes_ref(h, planes, None, None),
            N * d * es + N * L_TABLES * 4,
        )
    )
    out.append(
        (
            "bucket_table (torch on both sides)",
            lambda: lsh.bucket_table_ref(key_codes, K),
            lambda: lsh.bucket_table_ref(key_codes, K),
            2 * n * L_TABLES * 4 + L_TABLES * ((1 << K) + 1) * 8,
        )
    )
    out.append(
        (
            "lsh_candidates",
            lambda: k.lsh_candidates(q_codes, sorted_ids, offsets, C, B),
            lambda: lsh.lsh_candidates_ref(q_codes, sorted_ids, offsets, C, B),
            N * L_TABLES * 4 + N * L_TABLES * 16 + read_ids + N * C * 12,
        )
    )
    out.append(
        (
            "lsh_query (fused hash + lookup)",
            lambda: k.lsh_query(h, planes, None, sorted_ids, offsets, C, B),
            lambda: lsh.lsh_candidates_ref(
                lsh.simhash_codes_ref(h, planes, None, None), sorted_ids, offsets, C, B
            ),
            N * d * es + N * L_TABLES * 16 + read_ids + N * C * 12,
        )
    )
    out.append(
        (
            "sampled_logits_fwd",
            lambda: k.sampled_logits_fwd(h, W, None, ids, logw, target),
            lambda: est.sampled_logits_fwd_ref(h, W, None, ids, logw, target),
            gathered + ids_bytes + N * d * es * 2 + N * 8,
        )
    )
    out.append(
        (
            "sampled_logits_bwd (coef + dh fused)",
            lambda: k.sampled_logits_bwd(grad, h, W, None, ids, logw, target, lse),
            lambda: (lambda c: (c, est.grad_hidden_ref(c[0], c[1], W)))(
                est.sampled_logits_coef_ref(grad, h, W, None, ids, logw, target, lse)
            ),
            gathered + ids_bytes + N * d * (es * 2 + 4) + N * M1 * 12,
        )
    )
    out.append(
        (
            "grad_hidden",
            lambda: k.grad_hidden(coef, ids1, W),
            lambda: est.grad_hidden_ref(coef, ids1, W),
            gathered + N * M1 * 12 + N * d * 4,
        )
    )
    scatter_bytes = n * d * 4 + N * d * es + N * M1 * 12 + 2 * N * (live + 1) * d * 4
    out.append(
        (
            "scatter_grad_weight (atomics)",
            lambda: k.scatter_grad_weight(coef, ids1, h, n),
            lambda: est.scatter_grad_weight_ref(coef, ids1, h, n),
            scatter_bytes,
        )
    )
    out.append(
        (
            "scatter_grad_weight (deterministic)",
            lambda: k.scatter_grad_weight(coef, ids1, h, n, deterministic=True),
            lambda: est.scatter_grad_weight_ref(coef, ids1, h, n),
            scatter_bytes,
        )
    )
    return out, gathered


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    ap.add_argument("--N", type=int, default=8192)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--C", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--no-twin", action="store_true", help="time the kernels only")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print(
            "bench/kernels_cuda.py: no CUDA device (torch.cuda.is_available() is False); "
            "these are GPU timings, nothing was measured.",
            file=sys.stderr,
        )
        return 2
    if os.environ.get("TRITON_INTERPRET") == "1":
        print(
            "bench/kernels_cuda.py: unset TRITON_INTERPRET to time compiled kernels.",
            file=sys.stderr,
        )
        return 2
    import triton

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
    copy_gbps = copy_bandwidth_gbps()
    print(f"{device}: measured copy bandwidth {copy_gbps:.0f} GB/s")
    records = []
    for n in args.n:
        for C in args.C:
            sizes = dict(N=args.N, d=args.d, C=C, n=n, L=L_TABLES)
            bench_cases, gathered = cases(args.N, n, args.d, C, dtype)
            step = {}
            for name, kernel_fn, twin_fn, nbytes in bench_cases:
                rec = dict(meta, **sizes, op=name, bytes=nbytes, copy_GBps=copy_gbps)
                for side, fn in (("kernel", kernel_fn), ("twin", twin_fn)):
                    if side == "twin" and args.no_twin:
                        continue
                    try:
                        med, lo, hi = _bench(fn)
                        rec[f"{side}_ms"], rec[f"{side}_ms_p20_p80"] = med, [lo, hi]
                        rec[f"{side}_GBps"] = nbytes / (med * 1e-3) / 1e9
                    except torch.cuda.OutOfMemoryError as e:
                        rec[f"{side}_error"] = f"out of memory: {str(e).splitlines()[0]}"
                    torch.cuda.empty_cache()
                if "kernel_ms" in rec:
                    step[name] = rec["kernel_ms"]
                records.append(rec)
                nan = float("nan")
                print(
                    f"n={n:>8} C={C:>5} {name:<40} kernel {rec.get('kernel_ms', nan):8.3f} ms"
                    f"  twin {rec.get('twin_ms', nan):8.3f} ms"
                    f"  {rec.get('kernel_GBps', nan):7.0f} GB/s"
                )
            # the targets: fwd + bwd vs reading the gathered rows once at copy speed,
            # and the query side (hash + lookup) as a share of the step
            fwd_bwd = step.get("sampled_logits_fwd", 0) + step.get(
                "sampled_logits_bwd (coef + dh fused)", 0
            )
            query = step.get("lsh_query (fused hash + lookup)", float("nan"))
            train = fwd_bwd + step.get("scatter_grad_weight (atomics)", 0) + query
            read_once_ms = gathered / (copy_gbps * 1e9) * 1e3
            records.append(
                dict(
                    meta,
                    **sizes,
                    op="summary",
                    fwd_bwd_ms=fwd_bwd,
                    gathered_bytes=gathered,
                    read_gathered_once_ms=read_once_ms,
                    fwd_bwd_over_read_once=fwd_bwd / read_once_ms,
                    query_ms=query,
                    step_ms=train,
                    query_share=query / train,
                    copy_GBps=copy_gbps,
                )
            )
            print(
                f"    fwd+bwd {fwd_bwd:.3f} ms = {fwd_bwd / read_once_ms:.2f}x one read of the "
                f"gathered rows; hash+lookup {100 * query / train:.1f}% of the step"
            )
    out = args.out or Path(__file__).parent / "results" / (
        "kernels_cuda_" + device.replace(" ", "_") + "_" + args.dtype + ".json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, indent=1))
    print(f"wrote {len(records)} records to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
