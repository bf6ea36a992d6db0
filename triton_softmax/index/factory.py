"""make_index: the unbuilt index for a method, with the library's defaults (one place)."""

from __future__ import annotations

import torch

from .clusters import ClusterIndex
from .faiss import (
    IVF_KINDS,
    PQ_MIN_ROWS,
    FaissIndex,
    built_kind,
    default_nlist,
    faiss_gpu_available,
)
from .generators import make_generator
from .simhash import LSHIndex, default_num_bits, default_rank

Index = LSHIndex | FaissIndex | ClusterIndex


def faiss_kind(faiss_index: str, n: int, device: torch.device | str | None = None) -> str:
    """ "auto": "flat" below 10^5 classes; from 10^5 "ivfpq" (IVF lists of 4-bit PQ codes
    scored by fast-scan) where FAISS runs on the host, "ivf" where faiss-gpu serves CUDA
    weights (FAISS's GPU IVF-PQ has no fast-scan). An explicit kind stays.

    ivfpq against IVF-Flat, same nlist and nprobe, one thread (2026-12-01): WordNet synset,
    6 epochs side by side, final P@1 0.984 vs 0.982 at 36 vs 58 s per epoch; its trained
    snapshot, recall of the exact top-32 0.250 vs 0.253, captured mass 0.153 vs 0.158, at
    32 vs 230 ms per 1,024 queries (bench/results/*-20261201-ivfpq.json)."""
    if faiss_index != "auto":
        return faiss_index
    if n < 100_000:
        return "flat"
    on_cuda = device is not None and torch.device(device).type == "cuda"
    return "ivf" if on_cuda and faiss_gpu_available() else "ivfpq"


def make_index(
    method: str,
    n: int,
    d: int,
    num_candidates: int,
    *,
    lsh_bits: int | None = None,
    lsh_tables: int = 8,
    faiss_index: str = "auto",
    faiss_nlist: int | None = None,
    faiss_nprobe: int = 16,
    seed: int = 0,
    device: torch.device | str | None = None,
    lsh_generator: str | None = "tables",
    validate: bool = False,
    rerank_copy: bool | None = None,
    lsh_nprobe: int | None = None,
    lsh_rank: str | None = None,
) -> Index:
    """An unbuilt index for `method` ("lsh" or "faiss") with the library's defaults.

    lsh_generator: "tables" (or None) = LSHIndex (ranked by collision count or exact logit:
    lsh_rank), or
    "clusters" (index/generators.py: k-means lists, union reranked by exact logits);
    rerank_copy: the clusters lists are scored from a copy of the rows taken at build (None:
    on a CPU, clusters.copy_rows_by_default); lsh_nprobe: clusters lists read per query;
    lsh_rank: the tables' ranking, "count" | "score" | None (simhash.default_rank)."""
    if method == "lsh" and lsh_generator not in (None, "tables"):
        if lsh_rank is not None:
            raise ValueError(f"lsh_rank is for the tables generator, not {lsh_generator!r}")
        return make_generator(
            lsh_generator,
            n,
            d,
            seed=seed,
            validate=validate,
            rerank_copy=rerank_copy,
            nprobe=lsh_nprobe,
        )
    if method == "lsh":
        K = lsh_bits if lsh_bits is not None else default_num_bits(n, lsh_tables, num_candidates)
        return LSHIndex(d, K, lsh_tables, seed=seed, device=device, rank=lsh_rank)
    if method == "faiss":
        kind = faiss_kind(faiss_index, n, device)
        return FaissIndex(kind, nlist=faiss_nlist, nprobe=faiss_nprobe, seed=seed)
    raise ValueError(f"no index for method {method!r}")


def describe(method: str, n: int, num_candidates: int, options, device=None) -> str:
    """The explain() suffix for the index `method` over n rows (options: IndexOptions) whose
    weights are on `device` (None: not known yet, taken as the host)."""
    gen = getattr(options, "lsh_generator", None)
    if method == "lsh" and gen not in (None, "tables"):
        rows = {
            True: "a copy of the rows taken at refresh",
            False: "live rows",
            None: "a copy of the rows taken at refresh on a CPU, live rows on CUDA",
        }[options.rerank_copy]
        probes = f", nprobe={options.lsh_nprobe}" if options.lsh_nprobe is not None else ""
        return f"; lsh generator {gen} (union reranked by exact logits of {rows}{probes})"
    if method == "lsh":
        K = options.lsh_bits or default_num_bits(n, options.lsh_tables, num_candidates)
        rank = getattr(options, "lsh_rank", None) or default_rank(device)
        by = "exact logit" if rank == "score" else "collision count"
        return f"; lsh K={K} bits x L={options.lsh_tables} tables, buckets ranked by {by}"
    if method == "faiss":
        kind = faiss_kind(options.faiss_index, n, device)
        if built_kind(kind, n) != kind:
            return f"; faiss index flat ({kind} trains its codes on at least {PQ_MIN_ROWS} rows)"
        text = f"; faiss index {kind}"
        if kind in IVF_KINDS:
            text += f" nlist={options.faiss_nlist or default_nlist(n)}"
        if kind == "ivfpq":
            text += " (4-bit PQ codes: approximate ranking; S is scored with exact logits)"
        return text
    return ""
