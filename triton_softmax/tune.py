"""Measure where the sampled paths overtake the exact one on this device; write the table.

    python -m triton_softmax.tune                       # short sweep, writes the user cache
    python -m triton_softmax.tune --d 128 --N 256 --n 1e3 1e4 1e5 1e6
    python -m triton_softmax.tune --from-records bench/results/cpu.jsonl --out FILE

Each measurement is one training step (forward + backward + SGD step; sparse gradient for the
sampled paths) and one `topk(hidden, 10)` (inference), median of repeats after a warm-up,
with the index refresh excluded (it is amortised over refresh_every steps and reported by
the module separately). The crossover of a path is the n where its time falls below the
exact path's, interpolated in log-log between the measured n (null when it never does in
the measured range); "lsh_topk"/"faiss_topk" are the inference crossovers.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from .dispatch import TABLE_FORMAT, cache_path, device_class, validate_table
from .index.faiss import faiss_available


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn, device: torch.device, repeats: int) -> float:
    """Median wall seconds of fn() over `repeats` calls after one warm-up call."""
    fn()  # warm-up; builds the index once
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _problem(method, n, d, N, dtype, device, num_candidates, num_uniform, seed):
    from .loss import SampledSoftmaxLoss

    g = torch.Generator().manual_seed(seed)
    layer = SampledSoftmaxLoss(
        n,
        d,
        method=method,
        num_candidates=num_candidates,
        num_uniform=num_uniform,
        sparse_grad=method != "full",
        refresh_every=10**9,
        search_min_mass=None,  # the searching step (random weights would keep the gate shut)
        seed=seed,
        device=device,
        dtype=dtype,
    )
    h = torch.randn(N, d, generator=g).to(device=device, dtype=dtype)
    y = torch.randint(0, n, (N,), generator=g).to(device)
    return layer, h, y


def time_step(
    method: str,
    n: int,
    d: int,
    N: int,
    dtype: torch.dtype,
    device: torch.device,
    repeats: int = 5,
    num_candidates: int = 512,
    num_uniform: int = 512,
    seed: int = 0,
) -> float:
    """Median seconds of one training step of SampledSoftmaxLoss(method=...)."""
    layer, h, y = _problem(method, n, d, N, dtype, device, num_candidates, num_uniform, seed)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        layer(h, y).backward()
        opt.step()

    return _median_seconds(step, device, repeats)


def time_topk(
    method: str,
    n: int,
    d: int,
    N: int,
    dtype: torch.dtype,
    device: torch.device,
    repeats: int = 5,
    k: int = 10,
    num_candidates: int = 512,
    seed: int = 0,
) -> float:
    """Median seconds of `topk(hidden, k)`: exact chunked scores (full) or retrieval + exact
    rerank (lsh, faiss); the index is built once before timing."""
    layer, h, _ = _problem(method, n, d, N, dtype, device, num_candidates, 0, seed)
    layer.eval()
    return _median_seconds(lambda: layer.topk(h, k, exact=method == "full"), device, repeats)


def crossover(ns: list[int], full: list[float], other: list[float]) -> float | None:
    """First n where `other` becomes faster than `full`, log-log interpolated; None if never."""
    ratio = [math.log(o / f) for o, f in zip(other, full)]
    if ratio[0] <= 0:
        return float(ns[0])
    for i in range(1, len(ns)):
        if ratio[i] <= 0:
            a, b = math.log(ns[i - 1]), math.log(ns[i])
            t = ratio[i - 1] / (ratio[i - 1] - ratio[i])
            return float(math.exp(a + t * (b - a)))
    return None


def crossovers_from_records(records: list[dict]) -> list[dict]:
    """Table entries from sweep records {method, n, d, N, dtype, median_ms or amortised_ms}."""
    groups: dict[tuple, dict[str, dict[int, float]]] = {}
    short = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
    for r in records:
        r = dict(r, dtype=short.get(str(r.get("dtype")), r.get("dtype")))
        methods = ("full", "lsh", "faiss", "full_topk", "lsh_topk", "faiss_topk")
        if r.get("status", "ok") != "ok" or r.get("method") not in methods:
            continue
        if r.get("resolved_method") not in (None, r["method"]):
            continue  # the dispatcher ran another path (e.g. |S| + |T| >= n): not this one
        key = (int(r["d"]), int(r["N"]), str(r["dtype"]))
        # per step with the index refresh amortised (refresh / refresh_every) where recorded
        ms = r.get("amortised_ms") or r["median_ms"]
        groups.setdefault(key, {}).setdefault(r["method"], {})[int(r["n"])] = float(ms)
    entries = []
    for (d, N, dtype), by in sorted(groups.items()):
        if "full" not in by:
            continue
        entry = dict(d=d, N=N, dtype=dtype)
        pairs = (
            ("lsh", "full"),
            ("faiss", "full"),
            ("lsh_topk", "full_topk"),
            ("faiss_topk", "full_topk"),
        )
        for m, base in pairs:
            if base not in by:
                continue  # e.g. no inference timings in these records
            ns = sorted(set(by[base]) & set(by.get(m, {})))
            x = crossover(ns, [by[base][k] for k in ns], [by[m][k] for k in ns]) if ns else None
            entry[m] = None if x is None else int(round(x))
        entry["measured_n"] = sorted(by["full"])
        # the times themselves: method="auto" ranks the paths past their crossover by their
        # time at n (interpolated), not by where they crossed
        entry["ms"] = {
            m: [round(by[m][k], 4) if k in by[m] else None for k in entry["measured_n"]]
            for m in sorted(by)
        }
        entries.append(entry)
    return entries


def write_table(
    path: Path, device: str, device_name: str, source: str, entries: list[dict], merge: bool = True
) -> dict:
    table = {"format": TABLE_FORMAT, "devices": {}}
    if merge and path.is_file():
        try:
            table = validate_table(json.loads(path.read_text()))
        except (ValueError, json.JSONDecodeError):
            pass
    table["devices"][device] = dict(device_name=device_name, source=source, entries=entries)
    validate_table(table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1) + "\n")
    return table


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    try:  # Linux names the CPU model; platform.processor() is often just "x86_64"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m triton_softmax.tune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--d", type=int, nargs="+", default=None)
    p.add_argument("--N", type=int, nargs="+", default=None)
    p.add_argument("--n", type=float, nargs="+", default=None)
    p.add_argument("--dtype", nargs="+", default=None)
    p.add_argument("--num-candidates", type=int, default=512)
    p.add_argument("--num-uniform", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="table file (default: user cache)")
    p.add_argument(
        "--from-records",
        type=Path,
        nargs="+",
        default=None,
        help="build the table from sweep records (JSON lines) instead of measuring",
    )
    p.add_argument("--device-class", default=None, help="with --from-records: e.g. cpu")
    args = p.parse_args(argv)
    out = args.out or cache_path()

    if args.from_records:
        records = []
        for f in args.from_records:
            records += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        dclass = args.device_class or "cpu"
        kind = dclass.split(":")[0]
        records = [
            r for r in records if r.get("device_class", r.get("device", kind)) in (dclass, kind)
        ]
        entries = crossovers_from_records(records)
        names = {r.get("device_name") for r in records if r.get("device_name")}
        source = "records " + ", ".join(str(f) for f in args.from_records)
        write_table(out, dclass, ", ".join(sorted(names)) or dclass, source, entries)
        print(f"wrote {len(entries)} entries for {dclass} to {out}")
        return 0

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    ds = args.d or ([1024] if gpu else [128])
    Ns = args.N or ([8192] if gpu else [256])
    dtypes = args.dtype or (["bfloat16"] if gpu else ["float32"])
    ns = [int(x) for x in (args.n or ([1e4, 1e5, 1e6, 3e6] if gpu else [1e3, 1e4, 1e5, 1e6]))]
    methods = ["full", "lsh"] + (["faiss"] if faiss_available() else [])
    records = []
    total = len(ds) * len(Ns) * len(dtypes) * len(ns) * len(methods)
    k = 0
    for d in ds:
        for N in Ns:
            for dt in dtypes:
                for n in ns:
                    for m in methods:
                        k += 1
                        print(
                            f"[{k}/{total}] {m:5s} n={n:<9d} d={d} N={N} {dt}", end=" ", flush=True
                        )
                        try:
                            s = time_step(
                                m,
                                n,
                                d,
                                N,
                                getattr(torch, dt),
                                device,
                                args.repeats,
                                args.num_candidates,
                                args.num_uniform,
                            )
                            records.append(
                                dict(
                                    method=m,
                                    n=n,
                                    d=d,
                                    N=N,
                                    dtype=dt,
                                    median_ms=s * 1e3,
                                    status="ok",
                                )
                            )
                            s_inf = time_topk(
                                m,
                                n,
                                d,
                                N,
                                getattr(torch, dt),
                                device,
                                args.repeats,
                                num_candidates=args.num_candidates,
                            )
                            records.append(
                                dict(
                                    method=f"{m}_topk",
                                    n=n,
                                    d=d,
                                    N=N,
                                    dtype=dt,
                                    median_ms=s_inf * 1e3,
                                    status="ok",
                                )
                            )
                            print(f"step {s * 1e3:9.2f} ms, topk {s_inf * 1e3:9.2f} ms")
                        except (RuntimeError, MemoryError) as exc:  # OOM: record, go on
                            records.append(
                                dict(
                                    method=m,
                                    n=n,
                                    d=d,
                                    N=N,
                                    dtype=dt,
                                    status="failed",
                                    reason=str(exc)[:200],
                                )
                            )
                            print(f"failed: {str(exc)[:80]}")
    entries = crossovers_from_records(records)
    source = f"tune run {time.strftime('%Y-%m-%d %H:%M')} on {_device_name(device)}"
    write_table(out, device_class(device), _device_name(device), source, entries)
    for e in entries:
        print(
            f"d={e['d']} N={e['N']} {e['dtype']}: lsh overtakes full at n={e['lsh']}, "
            f"faiss at n={e.get('faiss')}; for topk: lsh {e.get('lsh_topk')}, "
            f"faiss {e.get('faiss_topk')}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
