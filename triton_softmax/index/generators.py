"""The lsh path's candidate generators by name (IndexOptions.lsh_generator; factory.make_index).

"tables": index.simhash.LSHIndex (SimHash tables ranked by collision count; the bucket_shared
scheme needs its codes and tables). "clusters": index.clusters.ClusterIndex. "simhash":
index.simhash_rerank.SimHashIndex. Defaults chosen from bench/candidates.py's frontier on the
trained WordNet synset snapshot (docs/accuracy.md).
"""

from __future__ import annotations

from .clusters import ClusterIndex
from .simhash_rerank import SimHashIndex

LSH_GENERATORS = ("clusters", "simhash", "tables")
DEFAULT_LSH_GENERATOR = "clusters"


def check_lsh_generator(name: str, candidate_scheme: str = "per_example") -> None:
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
) -> ClusterIndex | SimHashIndex:
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
    if name == "simhash":
        return SimHashIndex(d, seed=seed, validate=validate)
    raise ValueError(f"make_generator builds clusters or simhash, not {name!r}")
