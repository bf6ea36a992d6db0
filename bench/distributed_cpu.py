"""Class-sharded softmax on CPU with gloo: time and bytes communicated per step, R ranks vs 1.

Every configuration runs the same code (ShardedSampledSoftmaxLoss in a gloo process group,
world size 1 included), spawned fresh per world size. A step is forward + backward of the
loss on replicated hidden states (N, d); the index refresh is timed separately (it runs
once, before the timed steps). Bytes are counted from the collectives' tensor sizes
(CommCounter: the payload each rank contributes per step; a ring all-reduce moves about
2 (R - 1) / R times that over each rank's link, nothing for R = 1). The collectives' own
time is measured by replaying the same all-reduces (same sizes, dtypes and ops) in
isolation.

    python bench/distributed_cpu.py                       # n=1e6, d=128, N=256, ranks 1 and 2
    python bench/distributed_cpu.py --n 100000 --steps 2  # quicker

Writes bench/results/distributed_cpu-<time>.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PATHS = {  # label: (method, sparse_grad)
    "full": ("full", False),
    "lsh": ("lsh", False),
    "lsh-sparse": ("lsh", True),
}


def _replay_collectives(sizes, group, reps=20):
    """Median seconds of one step's all-reduces (op, numel, dtype) replayed alone."""
    bufs = [(op, torch.zeros(numel, dtype=dtype)) for op, numel, dtype in sizes]
    times = []
    for _ in range(reps):
        dist.barrier(group)
        t0 = time.perf_counter()
        for op, buf in bufs:
            dist.all_reduce(buf, op=op, group=group)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rank_main(rank, world, init_file, args, out_file):
    from triton_softmax.distributed import ShardedSampledSoftmaxLoss

    torch.set_num_threads(max(1, args.threads // world))
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=600),
    )
    records = []
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.N, args.d, generator=g)
    target = torch.randint(0, args.n, (args.N,), generator=g)
    for label in args.paths:
        method, sparse = PATHS[label]
        t0 = time.perf_counter()
        m = ShardedSampledSoftmaxLoss(
            args.n,
            args.d,
            method=method,
            num_candidates=args.S,
            num_uniform=args.T,
            refresh_every=10**9,
            sparse_grad=sparse,
            seed=0,
        )
        init_s = time.perf_counter() - t0
        refresh_s = 0.0
        if method != "full":
            dist.barrier()
            m.refresh(method)
            refresh_s = m.last_refresh_seconds
        step_s, step_bytes = [], []
        for step in range(args.warmup + args.steps):
            h = hidden.clone().requires_grad_(True)
            m.zero_grad(set_to_none=True)
            m.comm.reset()
            dist.barrier()
            t0 = time.perf_counter()
            loss = m(h, target)
            loss.backward()
            dt = time.perf_counter() - t0
            if step >= args.warmup:
                step_s.append(dt)
                step_bytes.append(m.comm.bytes)
        # the same all-reduces alone: max (N), sum (2N), sum (N d), fp32
        sizes = [
            (dist.ReduceOp.MAX, args.N, torch.float32),
            (dist.ReduceOp.SUM, 2 * args.N, torch.float32),
            (dist.ReduceOp.SUM, args.N * args.d, torch.float32),
        ]
        comm_s = _replay_collectives(sizes, None)
        # the slowest rank sets the step time
        t = torch.tensor([statistics.median(step_s), refresh_s, init_s])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        records.append(
            dict(
                path=label,
                method=method,
                sparse_grad=sparse,
                world_size=world,
                threads_per_rank=torch.get_num_threads(),
                shard_rows=m.shard[1] - m.shard[0],
                step_s_median=float(t[0]),
                step_s_all_rank0=step_s,
                refresh_s=float(t[1]),
                init_s=float(t[2]),
                comm_calls_per_step=m.comm.calls,
                comm_bytes_per_step=step_bytes[-1],
                comm_bytes_by_op=dict(m.comm.by_op),
                ring_wire_bytes_per_rank=int(step_bytes[-1] * 2 * (world - 1) / world),
                collectives_alone_s=comm_s,
                loss=float(loss.detach()),
            )
        )
        del m
    if rank == 0:
        with open(out_file, "w") as f:
            json.dump(records, f)
    dist.barrier()
    dist.destroy_process_group()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--N", type=int, default=256)
    p.add_argument("--S", type=int, default=512, help="num_candidates |S| (per shard)")
    p.add_argument("--T", type=int, default=512, help="num_uniform |T| (split over shards)")
    p.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="total CPU threads, divided among the ranks",
    )
    args = p.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in args.worlds:
            out_file = os.path.join(tmp, f"out_{world}.json")
            mp.start_processes(
                _rank_main,
                args=(world, os.path.join(tmp, f"pg_{world}"), args, out_file),
                nprocs=world,
                join=True,
                start_method="spawn",
            )
            with open(out_file) as f:
                rows += json.load(f)

    record = dict(
        bench="distributed_cpu",
        time=datetime.datetime.now().isoformat(timespec="seconds"),
        device=f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        "(shared machine)",
        backend="gloo",
        torch=torch.__version__,
        python=sys.version.split()[0],
        sizes=dict(n=args.n, d=args.d, N=args.N, S=args.S, T=args.T),
        steps=args.steps,
        warmup=args.warmup,
        results=rows,
    )
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"distributed_cpu-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)

    print(f"n={args.n} d={args.d} N={args.N} |S|={args.S} |T|={args.T}, gloo, {record['device']}")
    head = (
        f"{'path':<11} {'ranks':>5} {'thr/rk':>6} {'step s':>8} {'refresh s':>9} "
        f"{'coll/step':>9} {'bytes/step':>10} {'wire B/rk':>9} {'coll. alone s':>13}"
    )
    print(head)
    print("-" * len(head))
    for r in sorted(rows, key=lambda r: (list(PATHS).index(r["path"]), r["world_size"])):
        print(
            f"{r['path']:<11} {r['world_size']:>5} {r['threads_per_rank']:>6} "
            f"{r['step_s_median']:>8.3f} {r['refresh_s']:>9.3f} {r['comm_calls_per_step']:>9} "
            f"{r['comm_bytes_per_step']:>10} {r['ring_wire_bytes_per_rank']:>9} "
            f"{r['collectives_alone_s']:>13.5f}"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
