"""Bucket-shared candidates: the queries and classes that share an LSH bucket form a dense tile.

For each table l and each bucket c that holds at least one query, the tile is
H[queries in c] @ W[classes in c]^T: a dense product instead of per-example gathers (on a
GPU, tensor-core work: kernels/bucket_tiles.py; this module holds its PyTorch twins; the
loss built on them is triton_softmax/bucket_shared.py). Query i's candidate set S_i is the
whole union of its L buckets (no ranking, no cap: the hit test below must see exactly the
classes that were scored). A class that shares several buckets with a query is counted
once, in the first table where they collide: tile entry (i, j) of table l is masked when
code_l'(i) = code_l'(j) for some l' < l.
The target is masked out of the tiles and added as its own term, and one uniform T per batch
(weight n/|T|; draws that share a bucket with the query or are its target removed) estimates
the rest:

    Z-hat_i = sum_{j in S_i, j != y} e^{z_ij} + e^{z_iy}
              + n/|T| sum_{t in T} 1[t not in S_i, t != y] e^{z_it}

    lse_tiles[l, i] = log sum_{j in bucket_l(i), j kept} e^{z_ij}        (the kernel's output)
    log Z-hat_i     = logsumexp(lse_tiles[:, i], z_iy, T term)

The twins below enumerate the tiles in Python (one host read per table, one small matmul per
tile): they are the oracle for the kernels and the CPU path of the tiled scheme, whose speed
against the per-example gather on the bucket union is measured in bench/bucket_tiles.py.
"""

from __future__ import annotations

import torch

from .sampled_logits import acc_dtype


def _tiles(query_codes: torch.Tensor, offsets: torch.Tensor):
    """Yield (l, q, lo, hi): table, query ids of one occupied bucket, its class range."""
    codes = query_codes.long()
    for l in range(codes.shape[1]):
        sorted_codes, order = torch.sort(codes[:, l], stable=True)
        uniq, counts = torch.unique_consecutive(sorted_codes, return_counts=True)
        lo_hi = torch.stack([offsets[l, uniq], offsets[l, uniq + 1]], 1).tolist()
        start = 0
        for (lo, hi), cnt in zip(lo_hi, counts.tolist()):  # one host read per table
            q = order[start : start + cnt]
            start += cnt
            if hi > lo:
                yield l, q, lo, hi


def _tile_logits(h, weight, bias, query_codes, key_codes, target, l, q, cls, acc):
    """(z, keep) of one tile: logits in `acc` and the first-collision / not-target mask."""
    z = h[q] @ weight[cls].to(acc).T
    if bias is not None:
        z = z + bias[cls].to(acc)
    earlier = (
        query_codes[q, :l].long().unsqueeze(1) == key_codes[cls, :l].long().unsqueeze(0)
    ).any(2)
    keep = ~earlier & (cls.unsqueeze(0) != target[q].long().unsqueeze(1))
    return z, keep


def bucket_tile_lse_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    query_codes: torch.Tensor,
    key_codes: torch.Tensor,
    sorted_ids: torch.Tensor,
    offsets: torch.Tensor,
) -> torch.Tensor:
    """Twin of kernels.bucket_tiles.bucket_tile_lse: (L, N) log-sum-exp of each query's tile
    in each table (-inf where nothing is kept), fp32 (fp64 for fp64 inputs)."""
    acc = acc_dtype(hidden.dtype)
    N, L = query_codes.shape
    h = hidden.to(acc)
    out = torch.full((L, N), float("-inf"), dtype=acc, device=hidden.device)
    for l, q, lo, hi in _tiles(query_codes, offsets):
        cls = sorted_ids[l, lo:hi].long()
        z, keep = _tile_logits(h, weight, bias, query_codes, key_codes, target, l, q, cls, acc)
        out[l, q] = torch.logsumexp(z.masked_fill(~keep, float("-inf")), dim=1)
    return out


def bucket_tile_lse_bwd_ref(
    grad_lse: torch.Tensor,
    lse: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    query_codes: torch.Tensor,
    key_codes: torch.Tensor,
    sorted_ids: torch.Tensor,
    offsets: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Twin of kernels.bucket_tiles.bucket_tile_lse_bwd: (dh (N, d), dW (n, d), db (n,) | None)
    of sum(grad_lse * lse), fp32 (fp64 for fp64 inputs)."""
    acc = acc_dtype(hidden.dtype)
    (N, d), n = hidden.shape, weight.shape[0]
    h = hidden.to(acc)
    g, lse = grad_lse.to(acc), lse.to(acc)
    dh = torch.zeros(N, d, dtype=acc, device=hidden.device)
    dw = torch.zeros(n, d, dtype=acc, device=hidden.device)
    db = torch.zeros(n, dtype=acc, device=hidden.device) if bias is not None else None
    for l, q, lo, hi in _tiles(query_codes, offsets):
        cls = sorted_ids[l, lo:hi].long()
        z, keep = _tile_logits(h, weight, bias, query_codes, key_codes, target, l, q, cls, acc)
        p = torch.where(keep, torch.exp(z - lse[l, q].unsqueeze(1)), 0.0) * g[l, q].unsqueeze(1)
        # index_put_ with accumulate, not index_add_: many small calls, and on a busy CPU each
        # 2-D index_add_ waited ~80 ms on its OpenMP threads (measured, torch 2.13)
        dh.index_put_((q,), p @ weight[cls].to(acc), accumulate=True)
        dw.index_put_((cls,), p.T @ h[q], accumulate=True)
        if db is not None:
            db.index_put_((cls,), p.sum(0), accumulate=True)
    return dh, dw, db
