"""Which candidate generator finds the classes that matter, and at what cost.

    python -m bench.candidates [--problem synset|planted] [--snapshot FILE] [--queries 2048]
                               [--n 100000] [--only SUBSTR] [--out DIR]

For every generator and setting (rows below), on a trained-model snapshot (the WordNet synset
model after 2 faiss epochs: `python -m bench.candidates_snapshot` writes it once) or on the
sweep's planted problem (bench/harness.py: uniform weights, hidden planted near the target):
  - recall_top32: share of each query's exact top-32 logit classes (target excluded) among
    the |S| - 1 = 63 ids the generator returns;
  - mass: captured softmax mass, sum_{j in S, j != y} p_j / sum_{j != y} p_j under the exact
    softmax (what the sampled estimator's variance depends on);
  - fraction_scored: share of the n classes the generator scores exactly per query (the
    union it reranks; 63 / n for a generator that returns its ids unscored);
  - search_ms_per_1024 (and build_s): wall time on this machine, one torch thread.
References: uniform (63 random ids), FAISS flat (exact top-63), FAISS IVF at several nprobe
(IVF-Flat, and ivfpq: 4-bit PQ codes scored by fast-scan, its 63 ids unreranked),
and today's lsh path (lsh.LSHIndex with make_index's defaults). Also the geometry: row-norm
spread and |mean W| / mean |W| (centring is free for ranking). One JSON record goes to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import time

import torch

from bench import accuracy as acc
from bench import harness
from bench.candidates_snapshot import DEFAULT_SNAPSHOT
from triton_softmax import faiss_available
from triton_softmax.faiss_index import FaissIndex, default_nlist
from triton_softmax.index.clusters import ClusterIndex
from triton_softmax.index.quality import captured_mass, distinct_candidates
from triton_softmax.loss import make_index

S_MINUS_1 = 63  # |S| - 1 ids per query, as the accuracy recipe (|S| = 64 with the target)
TOP = 32


def exact_reference(h: torch.Tensor, W: torch.Tensor, y: torch.Tensor, chunk: int = 256):
    """Exact top-32 without the target (N, 32) and the log-sum-exp over j != y (N,)."""
    tops, lses = [], []
    for lo in range(0, h.shape[0], chunk):
        z = h[lo : lo + chunk].float() @ W.float().T
        z.scatter_(1, y[lo : lo + chunk].unsqueeze(1), float("-inf"))
        tops.append(z.topk(TOP, dim=1).indices)
        lses.append(torch.logsumexp(z, dim=1))
    return torch.cat(tops), torch.cat(lses)


def quality(ids, h, W, y, top, lse_noty) -> dict:
    """recall of the exact top-32 and captured mass of the returned ids (target dropped;
    the mass is the library's index.quality.captured_mass, which target_mass measures)."""
    srt, ok = distinct_candidates(ids, y)
    hit = (top.unsqueeze(2) == torch.where(ok, srt, -1).unsqueeze(1)).any(2)
    return dict(
        recall_top32=float(hit.float().mean()),
        mass=float(captured_mass(ids, h, W, None, y, lse_noty).mean()),
        filled=float(ok.float().sum(1).mean()) / ids.shape[1],
    )


def timed(fn, reps: int = 1):
    fn()  # warm-up (and the result for the quality figures)
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn()
    return out, (time.perf_counter() - t0) / reps


def geometry(W: torch.Tensor) -> dict:
    norms = W.float().norm(dim=1)
    q = torch.tensor([0.0, 0.05, 0.5, 0.95, 1.0])
    return dict(
        norm_quantiles=dict(zip(("min", "5%", "50%", "95%", "max"), norms.quantile(q).tolist())),
        norm_cv=float(norms.std() / norms.mean()),
        mean_row_norm_ratio=float(W.float().mean(0).norm() / norms.mean()),
    )


def generators(n: int, d: int, seed: int):
    """(name, family, settings, factory) for every row of the frontier."""
    rows = []
    rows.append(("uniform", "uniform", {}, None))
    rows.append(("lsh (today)", "lsh_old", {}, lambda: make_index("lsh", n, d, 64, seed=seed)))
    if faiss_available():
        rows.append(("faiss flat", "faiss", {"kind": "flat"}, lambda: FaissIndex("flat")))
        nl = default_nlist(n)
        for nlist in (nl, 3 * nl):
            for nprobe in (1, 4, 16, 64):
                rows.append(
                    (
                        f"faiss ivf nlist={nlist} nprobe={nprobe}",
                        "faiss_ivf",
                        {"nlist": nlist, "nprobe": nprobe},
                        lambda nlist=nlist: FaissIndex("ivf", nlist=nlist, seed=seed),
                    )
                )
        for nprobe in (4, 16, 64):  # 4-bit PQ codes in the same lists, fast-scan
            rows.append(
                (
                    f"faiss ivfpq nlist={nl} nprobe={nprobe}",
                    "faiss_ivf",
                    {"kind": "ivfpq", "nlist": nl, "nprobe": nprobe},
                    lambda: FaissIndex("ivfpq", nlist=nl, seed=seed),
                )
            )
    c0 = int(round(math.sqrt(n)))
    for mode, center, c in (
        ("spherical", True, c0),
        ("spherical", True, 3 * c0),
        ("spherical", False, c0),
        ("mips", True, c0),
    ):
        for p in (4, 8, 16, 32, 64):
            rows.append(
                (
                    f"clusters {mode}{'' if center else ' raw'} lists={c} nprobe={p}",
                    "clusters",
                    {"mode": mode, "center": center, "num_lists": c, "nprobe": p},
                    lambda mode=mode, center=center, c=c: ClusterIndex(
                        d, num_lists=c, mode=mode, center=center, seed=seed
                    ),
                )
            )
    for bal, p in ((1.25, 16), (1.25, 17), (1.25, 18), (1.5, 17)):  # lists split sooner
        rows.append(
            (
                f"clusters spherical balance={bal} lists={c0} nprobe={p}",
                "clusters",
                {"mode": "spherical", "center": True, "num_lists": c0, "nprobe": p,
                 "balance": bal},
                lambda bal=bal: ClusterIndex(d, num_lists=c0, balance=bal, seed=seed),
            )
        )  # fmt: skip
    return rows


def load_problem(args):
    if args.problem == "synset":
        snap = torch.load(args.snapshot)
        W = snap["weight"].float()
        h, y = snap["hidden"][: args.queries].float(), snap["target"][: args.queries]
        info = {k: snap[k] for k in ("task", "trained_with", "epochs", "train_seconds")}
        info["snapshot"] = args.snapshot
        # the query sample of the query-side lists: other training glosses than the measured
        sample = snap["hidden"][args.queries :].float()
        return W, h, y, sample, info
    W = harness.make_weight(args.n, args.dim, torch.float32, "cpu", args.seed)
    h, y = harness.make_inputs(W, args.queries, args.seed)
    sample, _ = harness.make_inputs(W, 2048, args.seed + 100)
    return W, h, y, sample, dict(task="planted", plant=harness.PLANT, n=args.n, d=args.dim)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.candidates", description=__doc__)
    p.add_argument("--problem", choices=("synset", "planted"), default="synset")
    p.add_argument("--snapshot", default=DEFAULT_SNAPSHOT)
    p.add_argument("--queries", type=int, default=2048)
    p.add_argument("--n", type=int, default=100_000, help="planted: classes")
    p.add_argument("--dim", type=int, default=128, help="planted: d")
    p.add_argument("--only", default=None, help="comma list of substrings of row names")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=acc.RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    W, h, y, sample, info = load_problem(args)
    info["query_sample"] = int(sample.shape[0])
    n, d = W.shape
    N = h.shape[0]
    top, lse = exact_reference(h, W, y)
    _, t_full = timed(lambda: exact_reference(h, W, y, chunk=N))
    geo = geometry(W)
    print(
        json.dumps(
            dict(problem=info, n=n, N=N, geometry=geo, exact_ms_per_1024=t_full * 1e3 * 1024 / N)
        )
    )
    rows = []
    built: dict = {}
    only = args.only.split(",") if args.only else None
    for name, family, settings, make in generators(n, d, args.seed):
        if only and not any(s in name for s in only):
            continue
        t_build = 0.0
        if make is None:  # uniform
            gen = torch.Generator().manual_seed(args.seed)
            ids, t = timed(lambda gen=gen: torch.randint(n, (N, S_MINUS_1), generator=gen))
            frac = S_MINUS_1 / n
        else:
            # one build per setting without nprobe (nprobe only changes the search)
            key = (family, tuple(sorted((k, v) for k, v in settings.items() if k != "nprobe")))
            if key not in built:
                index = make()
                t0 = time.perf_counter()
                index.build(W)
                built.clear()
                built[key] = (index, time.perf_counter() - t0)
            index, t_build = built[key]
            if "nprobe" in settings:
                if family == "faiss_ivf":
                    index.index.nprobe = settings["nprobe"]
                else:
                    index.nprobe = settings["nprobe"]
            ids, t = timed(lambda index=index: index.search(h, S_MINUS_1))
            if hasattr(index, "fraction_scored"):
                frac = index.fraction_scored(h)
            elif family == "faiss_ivf":
                q = h.float().numpy()
                _, lists = index.index.quantizer.search(q, index.index.nprobe)
                inv = index.index.invlists
                sizes = torch.tensor([inv.list_size(i) for i in range(index.index.nlist)])
                frac = float(sizes[torch.from_numpy(lists).clamp_min(0)].sum(1).float().mean()) / n
            elif family == "faiss":
                frac = 1.0
            else:  # today's lsh: its 63 ids are not scored before S
                frac = S_MINUS_1 / n
        row = dict(
            name=name,
            family=family,
            settings=settings,
            **quality(ids, h, W, y, top, lse),
            fraction_scored=frac,
            search_ms_per_1024=t * 1e3 * 1024 / N,
            build_s=t_build,
            load_avg=os.getloadavg()[0],
        )
        rows.append(row)
        print(
            f"{name:48s} recall {row['recall_top32']:.3f} mass {row['mass']:.3f} "
            f"frac {frac:.4f} {row['search_ms_per_1024']:.0f} ms/1024 build {t_build:.1f}s "
            f"load {row['load_avg']:.1f}",
            flush=True,
        )
    rec = dict(
        kind="candidates",
        started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=acc._device(),
        versions=acc._versions(),
        config=vars(args),
        problem=info,
        num_classes=n,
        dim=d,
        queries=N,
        size_returned=S_MINUS_1,
        geometry=geo,
        exact_ms_per_1024=t_full * 1e3 * 1024 / N,
        rows=rows,
        load_avg_start=load0,
        load_avg_end=os.getloadavg(),
    )
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    tag = args.problem if args.problem == "synset" else f"planted-n{n}"
    path = os.path.join(args.out, f"candidates-{tag}-{stamp}.json")
    with open(path, "w") as fh:
        json.dump(rec, fh, indent=1)
    print("->", path)
    return rec


if __name__ == "__main__":
    main()
