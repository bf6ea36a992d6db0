"""The clusters search by stage, and its routes side by side, each beside its recall.

    python3 -m bench.search_tiles --device cuda --n 1e6 1e7 --N 4096 --d 512 --dtype bf16
    python3 -m bench.search_tiles --device cpu --n 1e5 --N 256 --d 128 --repeats 5

Per n: one ClusterIndex (the lsh default's lists) over planted weights (bench.harness), then
  - stages of the CUDA route: probe_lists (centroid GEMM + top-p), list_tile_topk (the
    tensor-core kernel with the in-register top-k', or its twin where Triton does not run),
    merge_list_topk, and the whole search (with the padding of short rows);
  - routes of the whole search: "tiles_kernel" (ClusterIndex.search on CUDA now),
    "tiles_bmm" (the previous CUDA path: list_tile_scores' (N, p x L) fp32 buffer, then one
    top-k), "tiles_twin" (the kernel's PyTorch twin), and on a CPU "cpu_loop" (search_lists'
    CPU path, what a CPU user runs);
  - for each route the recall of the exact top-10 (exact_topk, on the first --recall-N
    queries) and the share of its ids equal to tiles_bmm's (exact routes: 1 up to ties).
Times: CUDA events around a synchronize (median of --repeats), or perf_counter on a CPU.
One JSON record (device, versions, sizes, per-route ms and recall) per run to --out.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from triton_softmax import ops
from triton_softmax.index.clusters import ClusterIndex
from triton_softmax.index.list_tiles import list_tile_scores, merge_list_topk
from triton_softmax.index.rerank import top_k_ids
from triton_softmax.retrieval import exact_topk

from .harness import make_inputs, make_weight, save_record

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def timed(fn, repeats: int, cuda: bool) -> dict:
    fn()  # compile / autotune / warm caches
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return dict(median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times))


def recall(ids: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean share of each row's exact top-10 among its ids."""
    hit = (ids.unsqueeze(2) == exact.unsqueeze(1)).any(1)
    return float(hit.float().mean())


def bmm_search(index: ClusterIndex, h: torch.Tensor, lists: torch.Tensor, k: int):
    """The previous CUDA route: list_tile_scores' (N, p x L) buffer, one top-k."""
    if index.live_rerank:
        rows, bias, members = index.weight, index.bias, index.order
    else:
        (rows, bias), members = (
            index._copied_rows(),
            torch.arange(index.order.numel(), device=h.device),
        )
    z = list_tile_scores(h, rows, bias, members, index.offsets, lists, index.max_list)
    return index._ids_at(lists, top_k_ids(z, None, k)[1])


def one_n(n: int, args, device: str, dtype: torch.dtype) -> dict:
    cuda = device == "cuda"
    W = make_weight(n, args.d, dtype, device, args.seed)
    h, _ = make_inputs(W, args.N, args.seed)
    k = args.S - 1  # the step's |S| with the target added
    t0 = time.perf_counter()
    index = ClusterIndex(args.d).build(W)
    if cuda:
        torch.cuda.synchronize()
    out: dict = dict(n=n, k=k, build_s=time.perf_counter() - t0)
    out.update(lists=int(index.centroids.shape[0]), nprobe=index.effective_nprobe)
    out["max_list"] = index.max_list
    out["fraction_scored"] = index.fraction_scored(h)
    lists = index.probe_lists(h)
    rows, bias, members = index.weight, index.bias, index.order
    r = args.repeats
    stages = dict(probe_lists=timed(lambda: index.probe_lists(h), r, cuda))
    stages["list_tile_topk"] = timed(
        lambda: ops.list_tile_topk(h, rows, bias, members, index.offsets, lists, k, index.max_list),
        r,
        cuda,
    )
    sc, pos = ops.list_tile_topk(h, rows, bias, members, index.offsets, lists, k, index.max_list)
    stages["merge_list_topk"] = timed(
        lambda: merge_list_topk(sc, pos, lists, index.offsets, index.order, k), r, cuda
    )
    out["stages"] = stages
    routes = {}
    if cuda:
        routes["tiles_kernel"] = lambda: index.search(h, k)
    else:
        routes["cpu_loop"] = lambda: index.search(h, k)
    routes["tiles_bmm"] = lambda: bmm_search(index, h, lists, k)

    def twin():
        old = os.environ.get("TRITON_SOFTMAX_IMPL")
        os.environ["TRITON_SOFTMAX_IMPL"] = "torch"
        try:
            return index._search_tiles(h, lists, k)
        finally:
            if old is None:
                os.environ.pop("TRITON_SOFTMAX_IMPL")
            else:
                os.environ["TRITON_SOFTMAX_IMPL"] = old

    if cuda or not args.skip_twin:
        routes["tiles_twin"] = twin
    R = min(args.recall_N, args.N)
    exact = exact_topk(h[:R], W, 10)[1]
    ref = bmm_search(index, h, lists, k)
    res = {}
    for name, fn in routes.items():
        try:
            ids = fn()
            res[name] = dict(
                **timed(fn, r, cuda),
                recall_top10=recall(ids[:R], exact),
                same_ids_as_tiles_bmm=float((ids == ref).float().mean()),
            )
        except torch.cuda.OutOfMemoryError as e:  # the bmm buffer at n = 1e7
            res[name] = dict(status="oom", reason=str(e).splitlines()[0][:200])
            torch.cuda.empty_cache()
        print(f"n={n:.0e} {name:13s} {res[name]}", flush=True)
    out["routes"] = res
    if cuda:
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--n", type=float, nargs="+", default=[1e5])
    p.add_argument("--N", type=int, default=256)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--S", type=int, default=512, help="|S| of the step (k = S - 1)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--recall-N", type=int, default=512, help="queries checked for recall")
    p.add_argument("--skip-twin", action="store_true", help="CPU: no twin route")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device, dtype = args.device, DTYPES[args.dtype]
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)  # 2 threads on a shared, loaded machine: 10x noise
    rec = dict(
        kind="search_tiles",
        device=torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        N=args.N,
        d=args.d,
        dtype=args.dtype,
        results=[one_n(int(n), args, device, dtype) for n in args.n],
    )
    save_record(rec, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
