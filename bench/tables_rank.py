"""The SimHash tables' two rankings side by side: collision count against exact logit.

    python3 -m bench.tables_rank --n 1e5 --N 1024 --d 128 --repeats 5 --out FILE
    python3 -m bench.tables_rank --device cuda --n 1e6 --N 4096 --d 512 --dtype bf16 --S 512
    python3 -m bench.tables_rank --before OLD_CHECKOUT ...   # also: the default CPU search
                                                            # of OLD_CHECKOUT and of this tree

Per n: one LSHIndex with make_index's defaults (K from n, L = 8 tables, max_per_bucket from
|S| and L) over the sweep's planted problem (bench.harness: nn.Linear-like weights, hidden
planted near a target row) or, with --snapshot FILE, a trained model's output layer and
hidden states (bench.candidates_snapshot: the WordNet synset model), then k = |S| - 1
candidates per query by
  - "count": the union of the query's buckets ranked by collision count (ops.lsh_query: the
    fused kernel on CUDA, its twin on a CPU);
  - "score": the same union ranked by exact logit (on a CPU reference/simhash.py
    lsh_scored_ref, on CUDA the list-tile kernel over the (table, bucket) ranges and the
    merge that drops repeated ids: index/list_tiles.search_table_tiles);
  - on CUDA also "score_twin": the scored route on its PyTorch twin (the kernel's A/B).
Each route: median search time (perf_counter around a synchronize, --repeats, routes
interleaved in the same rounds) and recall of the exact top-10 (retrieval.exact_topk, on the
first --recall-N queries). --before TREE: the default search (LSHIndex.search with no rank
given) of that checkout and of this one, one child process each per round, the order
swapped every round. One JSON record to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from triton_softmax.index.factory import make_index
from triton_softmax.index.simhash import default_max_per_bucket
from triton_softmax.retrieval import exact_topk

from .harness import make_inputs, make_weight, save_record

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ROOT = Path(__file__).resolve().parent.parent

# the default search of one checkout (PYTHONPATH = that tree); prints one JSON line
CHILD = r"""
import hashlib, json, statistics, sys, time, torch
torch.set_num_threads(1)
from bench.harness import make_inputs, make_weight
from triton_softmax.index.factory import make_index
n, N, d, S, repeats = (int(float(a)) for a in sys.argv[1:6])
W = make_weight(n, d, torch.float32, "cpu", 0)
h, _ = make_inputs(W, N, 0)
index = make_index("lsh", n, d, S - 1, lsh_generator="tables").build(W)
ids = index.search(h, S - 1)
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    index.search(h, S - 1)
    times.append(time.perf_counter() - t0)
digest = hashlib.sha1(ids.numpy().tobytes()).hexdigest()
print(json.dumps(dict(median_ms=1e3 * statistics.median(times), ids_hash=digest)))
"""


def recall(ids: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean share of each row's exact top-10 among its ids."""
    return float((ids.unsqueeze(2) == exact.unsqueeze(1)).any(1).float().mean())


def routes(index, h: torch.Tensor, k: int, cuda: bool) -> dict:
    def ranked(rank):
        def run():
            index.rank = rank
            return index.search(h, k)

        return run

    def twin():
        old = os.environ.get("TRITON_SOFTMAX_IMPL")
        os.environ["TRITON_SOFTMAX_IMPL"] = "torch"
        try:
            return ranked("score")()
        finally:
            if old is None:
                os.environ.pop("TRITON_SOFTMAX_IMPL")
            else:
                os.environ["TRITON_SOFTMAX_IMPL"] = old

    out = {"count": ranked("count"), "score": ranked("score")}
    if cuda:
        out["score_twin"] = twin
    return out


def problem(n: int, args, device: str, dtype: torch.dtype):
    """(weight, bias or None, hidden): the planted problem, or a trained snapshot's."""
    if args.snapshot:
        snap = torch.load(args.snapshot)
        W = snap["weight"].to(device, dtype)
        b = snap.get("bias")
        h = snap["hidden"][: args.N].to(device, dtype)
        return W, (b.to(device, dtype) if b is not None else None), h
    W = make_weight(n, args.d, dtype, device, args.seed)
    return W, None, make_inputs(W, args.N, args.seed)[0]


def one_n(n: int, args, device: str, dtype: torch.dtype) -> dict:
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    W, bias, h = problem(n, args, device, dtype)
    n, d = W.shape
    k = args.S - 1
    index = make_index("lsh", n, d, k, lsh_generator="tables", device=device, lsh_bits=args.bits)
    index.max_per_bucket = args.max_per_bucket
    t0 = time.perf_counter()
    index.build(W, bias)
    sync()
    out: dict = dict(n=n, k=k, build_s=time.perf_counter() - t0)
    B = index.max_per_bucket or default_max_per_bucket(k, index.num_tables)
    out.update(num_bits=index.num_bits, num_tables=index.num_tables, max_per_bucket=B)
    R = min(args.recall_N, args.N)
    exact = exact_topk(h[:R], W, 10, bias)[1]
    fns = routes(index, h, k, cuda)
    res = {}
    for name, fn in fns.items():  # warm-up (compile, autotune) and the quality figures
        ids = fn()
        sync()
        res[name] = dict(recall_top10=recall(ids[:R], exact), times=[])
    for _ in range(args.repeats):  # routes interleaved: the same load for each
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            res[name]["times"].append(time.perf_counter() - t0)
    for name, r in res.items():
        t = r.pop("times")
        r.update(median_ms=1e3 * statistics.median(t), min_ms=1e3 * min(t))
        print(f"n={n:.0e} {name:10s} {r}", flush=True)
    out["routes"] = res
    out["score_over_count_time"] = res["score"]["median_ms"] / res["count"]["median_ms"]
    if cuda:
        out["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def before_after(before: str, args) -> dict:
    """The default search of `before` and of this tree, interleaved child processes."""
    trees = [before, str(ROOT)]
    runs: dict[str, list[dict]] = {t: [] for t in trees}
    n = int(args.n[0])
    for r in range(args.rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
            cmd = [sys.executable, "-c", CHILD, str(n), str(args.N), str(args.d), str(args.S)]
            cmd.append(str(args.repeats))
            done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(done.stderr[-2000:])
            runs[tree].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {r} {tree}: {runs[tree][-1]['median_ms']:.1f} ms", flush=True)
    b, a = (statistics.median(x["median_ms"] for x in runs[t]) for t in trees)
    return dict(
        trees=trees,
        n=n,
        before_ms=b,
        after_ms=a,
        after_over_before=a / b,
        same_ids=len({x["ids_hash"] for t in trees for x in runs[t]}) == 1,
        rounds=runs,
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--n", type=float, nargs="+", default=[1e5])
    p.add_argument("--N", type=int, default=1024)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--S", type=int, default=64, help="|S| of the step (k = S - 1)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--recall-N", type=int, default=512, help="queries checked for recall")
    p.add_argument("--before", default=None, help="a checkout to time the default search of")
    p.add_argument("--rounds", type=int, default=4, help="--before: rounds per tree")
    p.add_argument("--before-label", default=None, help="--before: its commit, for the record")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--bits", type=int, default=None, help="K (None: make_index's default)")
    p.add_argument("--max-per-bucket", type=int, default=None, help="None: the default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--snapshot", default=None, help="a trained snapshot (bench.candidates_snapshot)"
    )
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device, dtype = args.device, DTYPES[args.dtype]
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rec = dict(
        kind="tables_rank",
        device=torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        problem=args.snapshot or "planted (bench.harness)",
        N=args.N,
        d=args.d,
        S=args.S,
        dtype=args.dtype,
        load_avg_start=os.getloadavg(),
        results=[one_n(int(n), args, device, dtype) for n in args.n],
    )
    if args.before:
        rec["default_cpu_before_after"] = before_after(args.before, args)
        rec["default_cpu_before_after"]["before_label"] = args.before_label
        rec["default_cpu_before_after"]["after_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    rec["load_avg_end"] = os.getloadavg()
    save_record(rec, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
