"""The lsh path's candidate generators by name (IndexOptions.lsh_generator; factory.make_index).

"clusters" (the default): index.clusters.ClusterIndex, k-means lists whose union is scored
with exact logits. "tables": index.simhash.LSHIndex, SimHash tables hashed and looked up by the
fused Triton kernels (kernels/simhash.py, kernels/bucket_lookup.py), the buckets' union ranked
by collision count or by exact logit (IndexOptions.lsh_rank; on CUDA by exact logit);
the bucket_shared scheme needs its codes and tables. Defaults chosen from bench/candidates.py's
frontier on the trained WordNet synset snapshot (docs/accuracy.md).

Retired on 2026-12-07, each for a measured reason (bench/results/candidates-synset-20261130-*):
"simhash" (multi-probe SimHash over centred keys, union scored exactly) found 1.8% of the
exact top-32 at 5.9 s per 1,024 queries, where the exact FAISS flat search takes 1.3 s and the
clusters generator finds 24% in 0.29 s; "query_clusters" (lists learnt from a sample of
queries; never wired into the module) found less at equal search time (18% against the
clusters lists' 52% at about 1.4 s per 1,024 queries, nprobe 1 against 64).
"""

from __future__ import annotations

from .clusters import ClusterIndex

LSH_GENERATORS = ("clusters", "tables")
DEFAULT_LSH_GENERATOR = "clusters"
RETIRED_LSH_GENERATORS = {
    "simhash": "it was retired on 2026-12-07 (slower than an exact search at 1.8% recall); "
    "use lsh_generator='clusters' (the default) or 'tables' (SimHash tables)",
    "query_clusters": "it was retired on 2026-12-07 (less recall than the clusters lists at equal "
    "search time); "
    "use lsh_generator='clusters' (the default)",
}


def check_lsh_generator(name: str, candidate_scheme: str = "per_example") -> None:
    if name in RETIRED_LSH_GENERATORS:
        raise ValueError(f"lsh_generator={name!r}: {RETIRED_LSH_GENERATORS[name]}")
    if name not in LSH_GENERATORS:
        raise ValueError(f"lsh_generator must be one of {LSH_GENERATORS}, got {name!r}")
    if candidate_scheme == "bucket_shared" and name != "tables":
        raise ValueError(
            "candidate_scheme='bucket_shared' scores whole SimHash buckets: it needs "
            f"lsh_generator='tables', got {name!r}"
        )


def make_generator(
    name: str,
    n: int,
    d: int,
    *,
    seed: int = 0,
    validate: bool = False,
    rerank_copy: bool | None = None,
    nprobe: int | None = None,
) -> ClusterIndex:
    """An unbuilt generator with its measured defaults for n classes of dimension d
    (clusters only: rerank_copy, lists scored from a copy of the rows taken at build; None:
    clusters.copy_rows_by_default; nprobe, lists read per query, None: default_nprobe)."""
    check_lsh_generator(name)
    if rerank_copy and name != "clusters":
        raise ValueError(f"rerank_copy is for the clusters generator, not {name!r}")
    if nprobe is not None and name != "clusters":
        raise ValueError(f"lsh_nprobe is for the clusters generator, not {name!r}")
    if name == "clusters":
        live = None if rerank_copy is None else not rerank_copy
        return ClusterIndex(d, nprobe=nprobe, seed=seed, validate=validate, live_rerank=live)
    raise ValueError(f"make_generator builds the clusters generator, not {name!r}")
