"""Exact scores of every probed list, one dense tile of queries per list, in fixed shapes.

The CUDA path of ClusterIndex.search (index/clusters.py). Query i probes p lists; the
(query, list) pairs are grouped by list and cut into tiles of up to `tile` queries, so a
list's rows are gathered once per tile and scored by one batched product (torch.bmm)
against the tile's queries, instead of once per query: list_topk (the kernel and its twin)
reads N p L d floats, this about (N p / tile + C) L d. The number of tiles is bounded from
the shapes alone (ceil(N p / tile) + min(C, N p): a list's last tile is its only partial
one), so there is no host read: it runs inside a training step. Unused tile slots score
query 0 and land in a scratch row; unused tiles read no list. Scores are fp32 products
(exact ranking); bf16 tensor-core scoring with an exact rerank would be faster on a GPU.

Why: on the H200 (2026-11-30) the per-(query, list) kernel took 49 ms of a 58 ms lsh step at
n = 10^6, N = 4096, d = 256 (1.6% of classes scored), and one fp32 case returned a wrong
id. This path was written after that run: it is exact (tested against the CPU's list-by-list
loop) but its GPU time is not measured yet (bench.step_profile --device cuda times it).
"""

from __future__ import annotations

import torch

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
