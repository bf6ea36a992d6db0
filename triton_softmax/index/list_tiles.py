"""The CUDA search of ClusterIndex (index/clusters.py) in fixed shapes, no host read.

search_list_tiles: ops.list_tile_topk (kernels/list_tiles.py: each probed list scored
against a tile of the queries probing it by tl.dot, each (query, probe) keeping its best
k' members in registers; twin reference/list_tiles.py) writes (N, p, k') candidates, and
merge_list_topk keeps each query's k best of its p k' by one top-k over int64 keys that
hold the score and the class id together (exact pairing; ties: the smaller class id).
No (N, p x largest list) score buffer: at n = 10^6 (lists of about 1,000 rows, up to 2x
that after balancing) and k' = 512 the candidates take a quarter of it, at 10^7 a tenth.

list_tile_scores: the previous CUDA path, kept as the A/B baseline of the GPU stage
(bench/search_tiles.py): the same tiles of queries sharing a list, scored by one batched
fp32 product (torch.bmm) into the (N, p x L) buffer that a top-k then reads.

search_table_tiles: the same kernel for the SimHash tables' scored ranking (index/simhash.py,
rank="score"): lists = the (table, bucket) CSR ranges of all L tables (tables_csr), probes = a
query's L codes, each read capped at max_per_bucket; then merge_table_topk, which also drops
the ids repeated across tables (a class sits in one bucket of every table). Twin of the
whole: reference/simhash.py lsh_scored_ref. What it costs: every (query, table) reads up to
max_per_bucket rows (at |S| = 512, L = 8, d = 512 bf16: 256 rows, 2 MB per query), and a
tile of queries shares a bucket's rows only when they hash to the same bucket, which spread
queries rarely do at 2^K buckets per table (most tiles then hold one query: a GEMV in a
16-row dot). The count ranking reads 4-byte ids only; the recall it gives up is measured in
bench/results/tables_rank-*.json (index/simhash.py default_rank).

Why: on the H200 (2026-11-30) the per-(query, list) GEMV kernel (ops.list_topk) took 49 ms
of a 58 ms lsh step at n = 10^6, N = 4096, d = 256 (1.6% of classes scored), and one fp32
case returned a wrong id. Neither tile path is timed on a GPU yet.
"""

from __future__ import annotations

import torch

from .. import ops

TILE_QUERIES = 64  # queries of one list scored together
TILE_FLOATS = 1 << 27  # gathered rows, and scores, of one chunk of tiles (512 MB of fp32)


def list_tile_scores(
    hidden: torch.Tensor,
    rows: torch.Tensor,
    bias: torch.Tensor | None,
    members: torch.Tensor,
    offsets: torch.Tensor,
    lists: torch.Tensor,
    max_list: int,
    tile: int | None = None,
) -> torch.Tensor:
    """(N, p * L) float32, L = max_list: slot s * L + j of row q is the exact logit of member
    j of list lists[q, s] (-inf in empty slots and for NaN logits): the layout of
    ClusterIndex._list_scores.

    hidden: (N, d) float; rows: (m, d) float, the rows the lists point into (the weight, or a
    copy in list order); bias: (m,) or None; members: (M,) int64, the row of each list
    position (offsets (C + 1,) int64 is the CSR over it); lists: (N, p) int64 in [0, C);
    tile: queries per tile (None: TILE_QUERIES).
    """
    tile = int(tile or TILE_QUERIES)
    N, p = lists.shape
    L, C, dev = int(max_list), offsets.numel() - 1, hidden.device
    P = N * p
    out = torch.full((P + 1, L), float("-inf"), device=dev)  # row P: unused tile slots
    if P == 0 or L == 0 or C <= 0 or members.numel() == 0:
        return out[:P].view(N, p * L)
    flat = lists.reshape(-1)
    by_list = torch.argsort(flat, stable=True)  # pairs (q * p + s) grouped by list
    lst = flat[by_list]
    # each list's run in the sorted pairs (bincount would read its size back from the
    # device; searchsorted needs no atomics, so it is deterministic too)
    bounds = torch.searchsorted(lst, torch.arange(C + 1, device=dev))
    counts = bounds[1:] - bounds[:-1]
    rank = torch.arange(P, device=dev) - bounds[lst]
    tiles = torch.div(counts + tile - 1, tile, rounding_mode="floor")
    first_tile = torch.cumsum(tiles, 0) - tiles
    T = -(-P // tile) + min(C, P)  # >= sum_c ceil(count_c / tile): one partial per list
    at = (first_tile[lst] + torch.div(rank, tile, rounding_mode="floor")) * tile + rank % tile
    slot_query = torch.zeros(T * tile, dtype=torch.int64, device=dev)
    slot_query.index_copy_(0, at, torch.div(by_list, p, rounding_mode="floor"))
    slot_pair = torch.full((T * tile,), P, dtype=torch.int64, device=dev)
    slot_pair.index_copy_(0, at, by_list)
    tile_list = torch.zeros(T, dtype=torch.int64, device=dev)
    tile_list.scatter_(0, torch.div(at, tile, rounding_mode="floor"), lst)  # equal values
    h = hidden.float()
    d = h.shape[1]
    # unused tiles get an empty range: they gather one cached row again and again, not a list
    start = offsets[tile_list]
    used = torch.zeros(T, dtype=torch.bool, device=dev)
    used.scatter_(0, torch.div(at, tile, rounding_mode="floor"), True)
    end = torch.where(used, offsets[tile_list + 1], start)
    j = torch.arange(L, device=dev)
    per_chunk = max(1, TILE_FLOATS // max(1, L * max(d, tile)))  # rows and scores bounded
    for t0 in range(0, T, per_chunk):
        t1 = min(T, t0 + per_chunk)
        pos = start[t0:t1, None] + j  # (t, L) list positions
        ok = pos < end[t0:t1, None]
        r = members[torch.where(ok, pos, torch.zeros_like(pos))]
        w = rows.index_select(0, r.reshape(-1)).view(t1 - t0, L, d).float()
        q = h.index_select(0, slot_query[t0 * tile : t1 * tile]).view(t1 - t0, tile, d)
        z = torch.bmm(q, w.transpose(1, 2))  # (t, tile, L)
        if bias is not None:
            z = z + bias[r].float().unsqueeze(1)
        z = torch.where(ok.unsqueeze(1) & ~torch.isnan(z), z, float("-inf"))
        out.index_copy_(0, slot_pair[t0 * tile : t1 * tile], z.reshape(-1, L))
    return out[:P].view(N, p * L)


def merge_list_topk(
    scores: torch.Tensor,
    pos: torch.Tensor,
    lists: torch.Tensor,
    offsets: torch.Tensor,
    order: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's k best of its (p, k') list candidates: (scores (N, k) float32, class ids
    (N, k) int64), best first, (-inf, -1) where fewer than k are finite.

    scores, pos: (N, p, k') from ops.list_tile_topk (positions in the probed lists); lists:
    (N, p) int64; offsets: (C + 1,) int64; order: (M,) int64 class id of each list position,
    increasing inside each list (kmeans.lists_csr's stable order: then the kernel's ties by
    position are ties by id, and the rule holds across lists too). Lists are disjoint, so
    the k best of the union are among them. The sort key is the score's order-preserving
    bits above 2^31 - 1 - id: one top-k over distinct int64 keys, no tie left to the sort's
    whim (equal scores: the smaller id first), and a score is
    gathered from the same column as its id."""
    N, p, kk = scores.shape
    if N == 0 or p * kk == 0:
        return (
            scores.new_full((N, k), float("-inf")),
            torch.full((N, k), -1, dtype=torch.int64, device=scores.device),
        )
    at = offsets[lists].unsqueeze(2) + pos.clamp_min(0)
    ids = torch.where(pos >= 0, order[at.clamp_max(order.numel() - 1)], -1).reshape(N, -1)
    s = scores.reshape(N, -1).float().contiguous()
    s = torch.where(s == 0, torch.zeros_like(s), s)  # -0.0 ties with +0.0
    bits = s.view(torch.int32)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    key = (ordered.long() << 32) | (0x7FFFFFFF - ids.clamp_min(0))
    ok = torch.isfinite(s) & (ids >= 0)
    key = torch.where(ok, key, torch.iinfo(torch.int64).min)
    m = min(k, key.shape[1])
    top = torch.topk(key, m, dim=1).indices
    ok = torch.gather(ok, 1, top)
    s = torch.where(ok, torch.gather(s, 1, top), float("-inf"))
    ids = torch.where(ok, torch.gather(ids, 1, top), -1)
    if m < k:
        s = torch.cat([s, s.new_full((N, k - m), float("-inf"))], dim=1)
        ids = torch.cat([ids, ids.new_full((N, k - m), -1)], dim=1)
    return s, ids


def search_list_tiles(
    hidden: torch.Tensor,
    rows: torch.Tensor,
    bias: torch.Tensor | None,
    members: torch.Tensor,
    offsets: torch.Tensor,
    order: torch.Tensor,
    lists: torch.Tensor,
    k: int,
    max_list: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (N, k) float32, class ids (N, k) int64): the k best members of each query's
    probed lists by exact logit, best first, (-inf, -1) where short; no host read.

    hidden: (N, d); rows: (m, d) the rows members point into, bias (m,) or None; members:
    (M,) int64; offsets (C + 1,); order: (M,) int64 class id of each list position; lists:
    (N, p) int64."""
    sc, pos = ops.list_tile_topk(hidden, rows, bias, members, offsets, lists, k, max_list)
    return merge_list_topk(sc, pos, lists, offsets, order, k)


def tables_csr(sorted_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(L 2^K + 1,) int64: the SimHash tables' L CSR offset rows (L, 2^K + 1) as one CSR over
    sorted_ids (L, n) flattened: list t 2^K + c is bucket c of table t."""
    L, n = sorted_ids.shape
    base = torch.arange(L, device=offsets.device).unsqueeze(1) * n
    tail = torch.full((1,), L * n, dtype=torch.int64, device=offsets.device)
    return torch.cat([(offsets[:, :-1] + base).reshape(-1), tail])


def merge_table_topk(
    scores: torch.Tensor, ids: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's k best distinct ids of its (p, k') bucket candidates: (scores (N, k)
    float32, ids (N, k) int64), best first, (-inf, -1) where fewer than k are finite.

    scores, ids: (N, p, k') from ops.list_tile_topk(..., tie_by_row=True), -1 / -inf empty.
    The same class comes back from several tables: one sort of (id, score) keys puts its
    copies side by side, the last (its largest score: the copies are one dot product, equal
    unless the accumulation order differed) is kept; then one top-k over (score, id) keys,
    ties by the smaller id, as merge_list_topk. The k best distinct ids of the union are
    among the candidates: within a bucket fewer than k distinct ids beat one of them."""
    N, p, kk = scores.shape
    if N == 0 or p * kk == 0:
        return scores.new_full((N, k), float("-inf")), ids.new_full((N, k), -1)
    s = scores.reshape(N, p * kk).float()
    ids = ids.reshape(N, p * kk)
    s = torch.where(s == 0, torch.zeros_like(s), s).contiguous()  # -0.0 ties with +0.0
    bits = s.view(torch.int32)
    ordered = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).long()  # int32 order of the floats
    ok = torch.isfinite(s) & (ids >= 0)
    by_id = torch.where(ok, (ids << 32) | (ordered + 2**31), -1)
    by_id, at = torch.sort(by_id, dim=1)
    ids = torch.where(by_id >= 0, by_id >> 32, -1)
    last = torch.ones_like(ok)
    last[:, :-1] = ids[:, :-1] != ids[:, 1:]
    ok = last & (ids >= 0)
    ordered = ordered.gather(1, at)
    key = torch.where(ok, (ordered << 32) | (0x7FFFFFFF - ids.clamp_min(0)), -(2**63))
    m = min(k, key.shape[1])
    top = torch.topk(key, m, dim=1).indices
    ok = ok.gather(1, top)
    s = torch.where(ok, s.gather(1, at.gather(1, top)), float("-inf"))
    ids = torch.where(ok, ids.gather(1, top), -1)
    if m < k:
        s = torch.cat([s, s.new_full((N, k - m), float("-inf"))], dim=1)
        ids = torch.cat([ids, ids.new_full((N, k - m), -1)], dim=1)
    return s, ids


def search_table_tiles(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    sorted_ids: torch.Tensor,
    flat_offsets: torch.Tensor,
    query_codes: torch.Tensor,
    k: int,
    max_per_bucket: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (N, k) float32, class ids (N, k) int64): the k best distinct classes of each
    query's L buckets (each read capped at max_per_bucket) by exact logit, best first, ties
    by the smaller id, (-inf, -1) where short; no host read. The contract of
    reference/simhash.py lsh_scored_ref.

    hidden: (N, d); weight: (n, d) the live rows, bias (n,) or None; sorted_ids: (L, n) int32
    and flat_offsets = tables_csr(sorted_ids, offsets); query_codes: (N, L) int32 in [0, 2^K).
    """
    L = sorted_ids.shape[0]
    nb = (flat_offsets.numel() - 1) // max(1, L)
    lists = query_codes.long() + torch.arange(L, device=query_codes.device) * nb
    members = sorted_ids.reshape(-1)
    sc, ids = ops.list_tile_topk(
        hidden, weight, bias, members, flat_offsets, lists, k, max_per_bucket, True
    )
    return merge_table_topk(sc, ids, k)
