"""PyTorch twins of the SimHash kernels (kernels/simhash.py, kernels/bucket_lookup.py).

The oracle for the kernels and the path on devices without Triton. The index that uses them
(and the MIPS transform they implement) is described in triton_softmax/index/simhash.py.
"""

from __future__ import annotations

import torch

from .sampled_logits import acc_dtype, row_dots

# rows of one gather (chunk x L B x d floats): on a CPU a chunk that stays in cache while bmm
# reads it (16 queries at L B = 256, d = 128: 24 vs 114 ms for one (1024, 256, 128)
# advanced-indexing gather at n = 1e5, one thread, 2026-12-07); on CUDA ~256 MiB
GATHER_FLOATS_CPU = 1 << 19
GATHER_FLOATS_CUDA = 1 << 26


def simhash_codes_ref(
    x: torch.Tensor,
    hyperplanes: torch.Tensor,
    bias: torch.Tensor | float | None = None,
    max_norm: torch.Tensor | float | None = None,
    chunk_rows: int = 1 << 14,
) -> torch.Tensor:
    """Packed SimHash codes, one int32 per row and table.

    x: (M, d) float; hyperplanes: (L, K, d + 2) float32; bias: (M,) per-row bias (keys), a
    float for every row (queries: 1.0 when the classes have a bias), or None (0);
    max_norm: M of the MIPS transform for keys, None for queries (MIPS coordinate 0).
    Returns (M, L) int32 with bit k of table l = [projection on hyperplane (l, k) > 0].
    """
    L, K, D2 = hyperplanes.shape
    M, d = x.shape
    assert D2 == d + 2
    planes = hyperplanes.reshape(L * K, D2).float()
    # bit k weighs 2^k; packing by a float matmul is exact for K <= 24 (MAX_BITS = 20)
    pack = (2.0 ** torch.arange(K, device=x.device, dtype=torch.float32)).unsqueeze(1)
    out = torch.empty(M, L, dtype=torch.int32, device=x.device)
    b = None
    for lo in range(0, M, chunk_rows):
        hi = min(M, lo + chunk_rows)
        xc = x[lo:hi].float()
        proj = xc @ planes[:, :d].T
        if isinstance(bias, torch.Tensor):
            b = bias[lo:hi].float()
            proj += b.unsqueeze(1) * planes[:, d]
        elif bias:
            proj += float(bias) * planes[:, d]
        if max_norm is not None:
            sq = torch.einsum("ij,ij->i", xc, xc)
            if b is not None:
                sq = sq + b * b
            m2 = torch.as_tensor(max_norm, dtype=torch.float32, device=x.device) ** 2
            proj += (m2 - sq).clamp_min(0).sqrt().unsqueeze(1) * planes[:, d + 1]
        bits = (proj > 0).to(torch.float32).view(hi - lo, L, K)
        out[lo:hi] = (bits @ pack).squeeze(2).to(torch.int32)
    return out


def bucket_table_ref(
    codes: torch.Tensor, num_bits: int, order_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort class ids by code per table: (sorted_ids (L, n) int32, offsets (L, 2^K + 1) int64).

    codes: (n, L) int32 in [0, 2^K). Bucket c of table l holds sorted_ids[l, offsets[l, c]:
    offsets[l, c + 1]], in a random order fixed by order_seed.
    """
    n, L = codes.shape
    device = codes.device
    gen = torch.Generator().manual_seed(order_seed)
    rank = torch.randperm(n, generator=gen).to(device)  # a random order inside every bucket
    # one sort of unique int64 keys (code, random rank): its permutation is the class ids
    key = (codes.T.to(torch.int64) << 32) | rank
    _, order = torch.sort(key, dim=1)
    sorted_ids = order.to(torch.int32)
    nb = 1 << num_bits
    flat = (codes.to(torch.int64) + torch.arange(L, device=device) * nb).reshape(-1)
    counts = torch.bincount(flat, minlength=L * nb).view(L, nb)
    offsets = torch.zeros(L, nb + 1, dtype=torch.int64, device=device)
    offsets[:, 1:] = torch.cumsum(counts, dim=1)
    return sorted_ids.contiguous(), offsets


def bucket_reads(
    query_codes: torch.Tensor,
    sorted_ids: torch.Tensor,
    offsets: torch.Tensor,
    max_per_bucket: int,
    empty: int,
) -> torch.Tensor:
    """(N, L * B) int64: the first B = max_per_bucket ids of each query's L buckets, table by
    table, `empty` in the slots past a bucket's end. query_codes: (N, L) int32."""
    N, L = query_codes.shape
    device = query_codes.device
    B = max_per_bucket
    table = torch.arange(L, device=device).unsqueeze(0).expand(N, L)
    # torch.take on flat positions: 2-5x faster on CPU than two-tensor advanced indexing
    at = table * offsets.shape[1] + query_codes.long()
    start = torch.take(offsets, at)  # (N, L)
    end = torch.take(offsets, at + 1)
    pos = start.unsqueeze(2) + torch.arange(B, device=device).view(1, 1, B)  # (N, L, B)
    ok = pos < end.unsqueeze(2)
    pos = torch.where(ok, pos, torch.zeros_like(pos))
    ids = torch.take(sorted_ids, table.unsqueeze(2) * sorted_ids.shape[1] + pos).long()
    return torch.where(ok, ids, torch.full_like(ids, empty)).view(N, L * B)


def lsh_candidates_ref(
    query_codes: torch.Tensor,
    sorted_ids: torch.Tensor,
    offsets: torch.Tensor,
    num_candidates: int,
    max_per_bucket: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Union of each query's L buckets, ranked by collision count and capped.

    query_codes: (N, L) int32. Returns (ids (N, C) int64 with -1 for empty slots,
    collisions (N, C) int32, 0 for empty slots), best first.
    """
    N, L = query_codes.shape
    C, B = num_candidates, max_per_bucket
    sentinel = torch.iinfo(torch.int64).max
    ids, _ = torch.sort(bucket_reads(query_codes, sorted_ids, offsets, B, sentinel), dim=1)
    # collisions of an id = length of its run in the sorted row; score only the run starts
    first = torch.ones_like(ids, dtype=torch.bool)
    first[:, 1:] = ids[:, 1:] != ids[:, :-1]
    run = torch.cumsum(first, dim=1) - 1  # run index of every slot
    count = torch.zeros_like(run).scatter_add_(1, run, torch.ones_like(run)).gather(1, run)
    score = torch.where(first & (ids != sentinel), count, torch.zeros_like(count)).to(torch.int32)
    k = min(C, L * B)
    top_score, top_pos = torch.topk(score, k, dim=1)
    top_ids = torch.gather(ids, 1, top_pos)
    top_ids = torch.where(top_score > 0, top_ids, torch.full_like(top_ids, -1))
    if k < C:
        pad = C - k
        top_ids = torch.cat([top_ids, top_ids.new_full((N, pad), -1)], dim=1)
        top_score = torch.cat([top_score, top_score.new_zeros((N, pad))], dim=1)
    return top_ids, top_score


def lsh_query_ref(hidden, hyperplanes, bias, sorted_ids, offsets, num_candidates, max_per_bucket):
    """simhash_codes_ref of the queries, then lsh_candidates_ref (the fused kernel's twin)."""
    codes = simhash_codes_ref(hidden, hyperplanes, bias, None)
    return lsh_candidates_ref(codes, sorted_ids, offsets, num_candidates, max_per_bucket)


def lsh_scored_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    query_codes: torch.Tensor,
    sorted_ids: torch.Tensor,
    offsets: torch.Tensor,
    num_candidates: int,
    max_per_bucket: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The union of each query's L buckets (each read capped at max_per_bucket, the prefix
    lsh_candidates_ref reads), every class once, ranked by its exact logit
    z = hidden . weight_j (+ bias_j): (scores (N, C) float32, ids (N, C) int64), best first.

    hidden: (N, d) float; weight: (n, d); bias: (n,) or None; query_codes: (N, L) int32.
    Ties: the smaller class id first; -0.0 ranks and comes back as +0.0; a class whose logit
    is not finite (bias -inf: masked; a NaN or inf row) is never ranked; (-inf, -1) past the
    union. Logits accumulate in fp32 (fp64 for fp64 inputs), stored as fp32. The twin of
    index/list_tiles.search_table_tiles (kernels/list_tiles.py, then a merge that drops the
    ids repeated across tables), and the CPU path of the tables' scored ranking."""
    N = query_codes.shape[0]
    C, B = int(num_candidates), int(max_per_bucket)
    device = hidden.device
    big = torch.iinfo(torch.int64).max
    ids, _ = torch.sort(bucket_reads(query_codes, sorted_ids, offsets, B, big), dim=1)
    dup = torch.zeros_like(ids, dtype=torch.bool)
    dup[:, 1:] = ids[:, 1:] == ids[:, :-1]
    ok = (ids != big) & ~dup  # each class once, in ascending id order
    U = ids.shape[1]
    acc = acc_dtype(torch.promote_types(hidden.dtype, weight.dtype))
    z = torch.empty(N, U, dtype=acc, device=device)
    d = weight.shape[1]
    budget = GATHER_FLOATS_CUDA if hidden.is_cuda else GATHER_FLOATS_CPU
    step = max(1, budget // max(1, U * d))
    safe = torch.where(ok, ids, torch.zeros_like(ids))  # slots left out gather row 0: cached
    h = hidden.to(acc)
    for lo in range(0, N, step):
        hi = min(N, lo + step)
        part = safe[lo:hi].reshape(-1)
        # index_select: 2-4x faster on a CPU than weight[part] (advanced indexing)
        rows = weight.index_select(0, part).view(hi - lo, U, d).to(acc)
        zz = row_dots(rows, h[lo:hi])
        if bias is not None:
            zz = zz + bias.index_select(0, part).view(hi - lo, U).to(acc)
        z[lo:hi] = zz
    z = torch.where(ok & torch.isfinite(z), z, torch.full_like(z, float("-inf")))
    z = torch.where(z == 0, torch.zeros_like(z), z)  # -0.0 -> +0.0
    # stable over ascending ids: equal logits keep the smaller id first
    s, j = torch.sort(z, dim=1, descending=True, stable=True)
    kk = min(C, U)
    s = s[:, :kk].float()
    top = torch.where(torch.isneginf(s), -1, ids.gather(1, j[:, :kk]))
    if kk < C:
        s = torch.cat([s, s.new_full((N, C - kk), float("-inf"))], dim=1)
        top = torch.cat([top, top.new_full((N, C - kk), -1)], dim=1)
    return s, top
