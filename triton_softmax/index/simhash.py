"""SimHash (random-hyperplane) LSH tables over the class weights, in PyTorch (the kernels' twin).

Maximum inner product -> angular search (Neyshabur & Srebro's "simple LSH"): a class row
x = [w, b] becomes P(x) = [x / M, sqrt(1 - |x|^2 / M^2)] with M = max_j |x_j|, a query
q = [h, 1] becomes Q(q) = [q / |q|, 0]; then cos(P(x), Q(q)) = q . x / (M |q|), so the angle
ranks classes by their logit. Positive scaling does not change a sign bit, so the hash of a
key only needs r . x + r_mips * sqrt(M^2 - |x|^2), and of a query r . q: hyperplanes are
(L, K, d + 2) over [x | bias coordinate | MIPS coordinate], and nothing else is materialised.

Tables: per table, class ids sorted by code (within a bucket in a fixed random order, so a
capped read of a large bucket is a uniform subsample), with CSR offsets over all 2^K codes.
A query reads at most `max_per_bucket` ids from each of its L buckets; rank="count" counts
how many tables each id collided in and keeps the `num_candidates` ids with most collisions
(kernels/bucket_lookup.py); rank="score" scores the union by exact logit under the live
weights and keeps the best (on CUDA index/list_tiles.search_table_tiles, the clusters'
tensor-core list tiles over the (table, bucket) ranges; elsewhere its twin,
reference/simhash.py lsh_scored_ref). Measurements behind the default: see default_rank.
"""

from __future__ import annotations

import math

import torch

from .. import nonfinite as _nf
from ..checks import check_int_option
from ..reference.simhash import (  # noqa: F401  (re-exported: the old lsh.py names)
    bucket_table_ref,
    lsh_candidates_ref,
    lsh_scored_ref,
    simhash_codes_ref,
)
from .base import Snapshot

MAX_BITS = 20  # dense CSR offsets hold 2^K + 1 int64 per table
RANKS = ("count", "score")


def check_rank(rank: str | None) -> None:
    if rank is not None and rank not in RANKS:
        raise ValueError(f"lsh_rank must be one of {RANKS} or None, got {rank!r}")


def default_rank(device: torch.device | str | None) -> str:
    """rank=None: "score" on CUDA, "count" elsewhere.

    Measured on a CPU (Intel Xeon @ 2.60GHz, 2 shared vCPUs, load 4.9-5.0, one thread, torch
    2.13.0; n = 1e5, d = 128, N = 1,024 planted queries, |S| - 1 = 63, K = 12, L = 8, 32 ids
    read per bucket): recall of the exact top-10 0.0209 scored against 0.0146 counted (1.43x),
    search 63.9 against 40.7 ms (1.57x slower: the union's ~90 distinct rows per query are
    gathered and scored on top of the count path's reads and sort;
    bench/results/tables_rank-cpu-n100000-20261207.json). So the host keeps "count" (the
    faster step; 0.58x the time of 38be7c1's, same ids, from exact_scores' cache-sized
    gathers) and CUDA, where the list-tile kernel scores the buckets on tensor cores with no
    (N, L B) buffer, ranks by "score" for its recall; its GPU time is not measured yet
    (scripts/gpu_pass.sh, stage search). On the trained WordNet synset snapshot (n =
    117,659, d = 128, bench.candidates_snapshot; same machine, load 5.4-5.7) the default
    tables hold few of the top classes whichever the ranking: recall of the exact top-10
    0.0045 scored against 0.0043 counted, 50.8 against 34.4 ms; with larger buckets (K = 8,
    128 ids read per bucket) scoring finds 0.0264 against 0.0047 (5.6x) at 207 against 100
    ms (bench/results/tables_rank-cpu-synset-*20261207.json): the ranking decides what a
    larger read buys, the tables' defaults (K, max_per_bucket) are still those of the
    count."""
    return "score" if device is not None and torch.device(device).type == "cuda" else "count"


NORM_HEADROOM = 1.05  # M = 1.05 max |x_j| at build: room for rows to grow between refreshes


def default_num_bits(n: int, num_tables: int, num_candidates: int) -> int:
    """K so that a bucket holds about as many ids as a query reads from it (4 |S| / L).

    The MIPS transform squeezes the angles between queries and keys towards 90 degrees, so
    it wants fewer bits than plain SimHash would (measured in tests/test_lsh.py).
    """
    target = n * num_tables / max(4 * num_candidates, 1)
    return int(min(MAX_BITS, max(1, round(math.log2(max(target, 2.0))))))


def default_max_per_bucket(num_candidates: int, num_tables: int) -> int:
    return max(16, math.ceil(4 * num_candidates / num_tables))


def make_hyperplanes(
    dim: int, num_bits: int, num_tables: int, seed: int, device=None
) -> torch.Tensor:
    """(L, K, dim + 2) float32 Gaussian hyperplanes, identical on every device for one seed."""
    gen = torch.Generator().manual_seed(seed)
    planes = torch.randn(num_tables, num_bits, dim + 2, generator=gen, dtype=torch.float32)
    return planes.to(device)


def max_row_norm(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """M = max_j |[w_j, b_j]| as a 0-d float32 tensor (stays on the device: no sync)."""
    low = weight.dtype in (torch.float16, torch.bfloat16)  # accumulate those in fp32
    sq = torch.linalg.vector_norm(weight, dim=1, dtype=torch.float32 if low else None)
    sq = sq.float().square()
    if bias is not None:
        sq = sq + bias.float().square()
    return sq.max().sqrt()


class LSHIndex(Snapshot):
    """SimHash LSH tables over a weight matrix; rebuilt by `build` (the refresh).

    num_bits K (<= 20), num_tables L, hyperplanes from `seed` (identical on every device and
    every rank); rank: "count" | "score" | None (default_rank: by the queries' device).
    `build(weight, bias)` hashes all n rows and sorts them into tables;
    `search(hidden, num_candidates)` returns ranked candidate ids.
    """

    def __init__(
        self,
        dim: int,
        num_bits: int,
        num_tables: int,
        seed: int = 0,
        max_per_bucket: int | None = None,
        device: torch.device | str | None = None,
        rank: str | None = None,
    ) -> None:
        check_int_option("lsh_bits (K)", num_bits, 1, MAX_BITS)
        check_rank(rank)
        self.rank = rank
        self.flat_offsets: torch.Tensor | None = None  # tables_csr, made at the first use
        check_int_option("lsh_tables (L)", num_tables, 1, 256)
        self.dim, self.num_bits, self.num_tables, self.seed = dim, num_bits, num_tables, seed
        self.max_per_bucket = max_per_bucket
        self.hyperplanes = make_hyperplanes(dim, num_bits, num_tables, seed, device)
        self.sorted_ids: torch.Tensor | None = None
        self.offsets: torch.Tensor | None = None
        self.has_bias = False
        self.n = 0
        self.any_nonfinite: torch.Tensor | None = None  # see nonfinite.py
        self.first_nonfinite: torch.Tensor | None = None
        # the classes a search may return (finite row, bias not -inf/NaN), and the live
        # weights that score the uniform classes filling short rows
        self.pool: torch.Tensor | None = None
        self.selectable: torch.Tensor | None = None  # (n,) bool; None: every class
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    @property
    def built(self) -> bool:
        return self.sorted_ids is not None

    @property
    def device(self) -> torch.device:
        return self.hyperplanes.device

    def to(self, device) -> LSHIndex:
        self.hyperplanes = self.hyperplanes.to(device)
        if self.built:
            self.sorted_ids = self.sorted_ids.to(device)
            self.offsets = self.offsets.to(device)
            self.flat_offsets = None
            self.codes = self.codes.to(device)
            self.max_norm = self.max_norm.to(device)
            self.any_nonfinite = self.any_nonfinite.to(device)
            self.first_nonfinite = self.first_nonfinite.to(device)
            self.pool = self.pool.to(device)
            if self.selectable is not None:
                self.selectable = self.selectable.to(device)
            self.weight = self.weight.to(device)  # the next build takes the live ones again
            if self.bias is not None:
                self.bias = self.bias.to(device)
        return self

    def _set_selectable(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """The pool of classes a search may return (not masked, not non-finite) and the live
        weights that score the classes filling short rows. One host read."""
        from .rerank import check_rows

        ok = check_rows(weight, bias, validate=False)
        self.pool = ok.nonzero().flatten()
        self.selectable = None if self.pool.numel() == ok.numel() else ok
        self.weight, self.bias = weight, bias

    def build(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> LSHIndex:
        from .. import ops

        weight = weight.detach()
        bias = bias.detach() if bias is not None else None
        if weight.shape[1] != self.dim:
            raise ValueError(f"weight has d={weight.shape[1]}, index was made for d={self.dim}")
        if self.hyperplanes.device != weight.device:
            self.hyperplanes = self.hyperplanes.to(weight.device)
        # a NaN/inf class row is hashed as zeros (it would spoil M for every row) and added
        # to every search instead (nonfinite.py); a masked class (-inf bias) is never returned
        self._set_selectable(weight, bias)
        weight, bias, self.any_nonfinite, self.first_nonfinite = _nf.finite_rows(weight, bias)
        # M with headroom: rows may grow by NORM_HEADROOM before the transform is invalid,
        # so a partial update (update_rows) stays exact while they do
        max_norm = max_row_norm(weight, bias) * NORM_HEADROOM
        codes = ops.simhash_codes(weight, self.hyperplanes, bias, max_norm)
        self.sorted_ids, self.offsets = ops.bucket_table(codes, self.num_bits, self.seed)
        self.flat_offsets = None
        self.codes = codes  # (n, L) int32: the bucket-shared scheme dedupes tiles with them
        self.has_bias = bias is not None
        self.n = weight.shape[0]
        self.max_norm = max_norm  # kept: drift checks re-hash rows with the same transform
        return self

    @torch.no_grad()
    def update_rows(
        self, weight: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor
    ) -> bool:
        """Re-hash only `rows` (the classes whose weights changed since the build) and re-sort
        the tables: the refresh without the O(n d K L) hashing of unchanged rows. Returns
        False, changing nothing, when a row outgrew the MIPS scale M (every key's extra
        coordinate would move): the caller then rebuilds. The result equals build() on the
        same weights with the same M."""
        from .. import ops

        if not self.built:
            return False
        live_w, live_b = weight.detach(), bias.detach() if bias is not None else None
        weight, bias, any_bad, first_bad = _nf.finite_rows(live_w, live_b)
        if bool(max_row_norm(weight, bias) > self.max_norm):  # one host read per refresh
            return False
        self.any_nonfinite, self.first_nonfinite = any_bad, first_bad
        self._set_selectable(live_w, live_b)
        rows = rows.to(self.codes.device).long()
        b = bias.detach()[rows] if bias is not None else None
        self.codes[rows] = ops.simhash_codes(
            weight.detach()[rows], self.hyperplanes, b, self.max_norm
        )
        self.sorted_ids, self.offsets = ops.bucket_table(self.codes, self.num_bits, self.seed)
        self.flat_offsets = None
        return True

    def query_codes(self, hidden: torch.Tensor) -> torch.Tensor:
        from .. import ops

        return ops.simhash_codes(hidden, self.hyperplanes, 1.0 if self.has_bias else None, None)

    def search_union(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, U) int64: every class that shares a bucket with the query in some table, once
        each, -1 padded (no ranking, no cap). U = L x the largest bucket read, found with one
        host read: the bucket-shared scheme's candidate sets."""
        if not self.built:
            raise RuntimeError("LSHIndex.search_union before build()")
        codes = self.query_codes(hidden.detach()).long()
        table = torch.arange(self.num_tables, device=codes.device).unsqueeze(0)
        sizes = self.offsets[table, codes + 1] - self.offsets[table, codes]
        B = max(1, int(sizes.max())) if sizes.numel() else 1
        ids, _ = lsh_candidates_ref(
            codes.int(), self.sorted_ids, self.offsets, self.num_tables * B, B
        )
        return _nf.add_nonfinite_class(ids, self.any_nonfinite, self.first_nonfinite)

    def union(self, hidden: torch.Tensor) -> torch.Tensor:
        """The CandidateIndex name of search_union."""
        return self.search_union(hidden)

    def state_dict(self) -> dict:
        """Settings and seed: the tables are rebuilt from the loaded weights (same hyperplanes)."""
        return dict(
            kind="simhash",
            dim=self.dim,
            num_bits=self.num_bits,
            num_tables=self.num_tables,
            seed=self.seed,
            max_per_bucket=self.max_per_bucket,
        )  # not rank: the tables are the same either way, only the search ranks them

    def search(self, hidden: torch.Tensor, num_candidates: int) -> torch.Tensor:
        """(N, num_candidates) int64 class ids, best first ((N, 1) for num_candidates = 0):
        most collisions first (rank "count"), or by exact logit under the live weights,
        ties by the smaller id (rank "score"). A row whose buckets hold fewer selectable
        classes is filled from uniform selectable classes by exact logit
        (rerank.pad_short_rows: no host read), so it holds num_candidates ids whenever that
        many classes are selectable; -1 only past them. Masked classes (-inf bias) are never
        returned; a non-finite class row found at build takes every query's last slot
        (nonfinite.py)."""
        from .. import ops
        from .rerank import exact_scores, pad_short_rows

        if not self.built:
            raise RuntimeError("LSHIndex.search before build(): call build(weight, bias) first")
        B = self.max_per_bucket or default_max_per_bucket(num_candidates, self.num_tables)
        h = hidden.detach()
        scores = None
        if (self.rank or default_rank(h.device)) == "score":
            scores, ids = self.search_scored(h, num_candidates, B)
        else:
            bias = 1.0 if self.has_bias else None  # the queries' bias coordinate
            ids, _ = ops.lsh_query(
                h, self.hyperplanes, bias, self.sorted_ids, self.offsets, num_candidates, B
            )
        # masked / non-finite classes are hashed with the rest (scored: a row non-finite at
        # build whose live logit is finite again would also take the last slot)
        if self.selectable is not None:
            ok = (ids >= 0) & self.selectable[ids.clamp_min(0)]
            ids = torch.where(ok, ids, torch.full_like(ids, -1))
            if scores is not None:
                scores = torch.where(ok, scores, torch.full_like(scores, float("-inf")))
        # fill short rows; on the host, where a read is free, only when some row is short
        if num_candidates > 0 and self.pool.numel() > 0 and (ids.is_cuda or bool((ids < 0).any())):
            if scores is None:
                scores = exact_scores(h, self.weight, self.bias, ids)
            ids = pad_short_rows(
                h, self.weight, self.bias, ids, scores, self.pool, num_candidates,
                # a search is a function of its input; drawn on the queries' device (a draw on
                # the host copied to CUDA would be a synchronising copy in the step)
                torch.Generator(device=h.device).manual_seed(self.seed),
            )  # fmt: skip
        return _nf.add_nonfinite_class(ids, self.any_nonfinite, self.first_nonfinite)

    def search_scored(
        self, hidden: torch.Tensor, num_candidates: int, max_per_bucket: int, tiles=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores (N, C) float32, ids (N, C) int64): the union of the query's buckets ranked
        by exact logit under the live weights (reference/simhash.py lsh_scored_ref's
        contract), (-inf, -1) past it. tiles: the list-tile route (None: on CUDA), else the
        twin (the CPU path: one gather of the union, no (table, bucket) schedule)."""
        from .list_tiles import search_table_tiles, tables_csr

        codes = self.query_codes(hidden)
        if hidden.is_cuda if tiles is None else tiles:
            if self.flat_offsets is None:
                self.flat_offsets = tables_csr(self.sorted_ids, self.offsets)
            return search_table_tiles(
                hidden, self.weight, self.bias, self.sorted_ids, self.flat_offsets, codes,
                num_candidates, max_per_bucket,
            )  # fmt: skip
        return lsh_scored_ref(
            hidden, self.weight, self.bias, codes, self.sorted_ids, self.offsets,
            num_candidates, max_per_bucket,
        )  # fmt: skip
