"""Bucket-shared candidates: the queries and classes that share an LSH bucket form a dense tile.

For each table l and each bucket c that holds at least one query, the tile is
H[queries in c] @ W[classes in c]^T: a dense product instead of per-example gathers (on a
GPU, tensor-core work; this module is the PyTorch reference and CPU path, the Triton tile
kernel is future work). Query i's candidate set S_i is the whole union of its L buckets (no
ranking, no cap: the hit test below must see exactly the classes that were scored). A class
that shares several buckets with a query is counted once, in the first table where they
collide: tile entry (i, j) of table l is masked when code_l'(i) = code_l'(j) for some l' < l.
The target is masked out of the tiles and added as its own term, and one uniform T per batch
(weight n/|T|; draws that share a bucket with the query or are its target removed) estimates
the rest:

    Z-hat_i = sum_{j in S_i, j != y} e^{z_ij} + e^{z_iy}
              + n/|T| sum_{t in T} 1[t not in S_i, t != y] e^{z_it}

The number of tiles depends on the data (a host sync to enumerate them): this scheme is for
large batches whose queries crowd into few buckets, where the dense tiles pay.
"""

from __future__ import annotations

import math

import torch

from .lsh import LSHIndex


def bucket_tile_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    index: LSHIndex,
    num_uniform: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-row estimator loss (N,) over bucket tiles; differentiable by autograd (dense grads).

    hidden (N, d), weight (n, d), bias (n,) | None, target (N,) int64 in [0, n); index: an
    LSHIndex built on weight (its codes, tables and hyperplanes). Accumulates in fp32 (fp64
    for fp64 inputs).
    """
    acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    N, n = hidden.shape[0], weight.shape[0]
    device = hidden.device
    h = hidden.to(acc)
    q_codes = index.query_codes(hidden.detach()).long()  # (N, L)
    k_codes = index.codes.long()  # (n, L)
    L = q_codes.shape[1]
    y = target.long()
    ninf = torch.tensor(float("-inf"), dtype=acc, device=device)
    parts = []  # per table: (N,) log-sum-exp of that table's tile entries for each query
    for l in range(L):
        part = torch.full((N,), float("-inf"), dtype=acc, device=device)
        for c in torch.unique(q_codes[:, l]).tolist():  # data-dependent: a host sync
            q = (q_codes[:, l] == c).nonzero().flatten()
            lo, hi = int(index.offsets[l, c]), int(index.offsets[l, c + 1])
            cls = index.sorted_ids[l, lo:hi].long()
            if cls.numel() == 0:
                continue
            z = h[q] @ weight[cls].to(acc).T  # the dense tile
            if bias is not None:
                z = z + bias[cls].to(acc)
            # first-collision dedupe across tables, and the target kept out of the tiles
            earlier = (q_codes[q, :l].unsqueeze(1) == k_codes[cls, :l].unsqueeze(0)).any(2)
            keep = ~earlier & (cls.unsqueeze(0) != y[q].unsqueeze(1))
            part = part.index_put((q,), torch.logsumexp(torch.where(keep, z, ninf), dim=1))
        parts.append(part)
    z_y = (h * weight[y].to(acc)).sum(1)
    if bias is not None:
        z_y = z_y + bias[y].to(acc)
    terms = parts + [z_y]
    if num_uniform:
        t = torch.randint(0, n, (num_uniform,), generator=generator, device=device)
        z_t = h @ weight[t].to(acc).T
        if bias is not None:
            z_t = z_t + bias[t].to(acc)
        # a draw is a hit when it shares a bucket with the query (it is in S_i) or is the target
        hit = (q_codes.unsqueeze(1) == k_codes[t].unsqueeze(0)).any(2) | (t == y.unsqueeze(1))
        logw = math.log(n / num_uniform)
        terms.append(torch.logsumexp(torch.where(hit, ninf, z_t + logw), dim=1))
    lse = torch.logsumexp(torch.stack(terms, dim=1), dim=1)
    return lse - z_y
