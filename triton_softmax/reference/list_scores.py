"""The best members of each probed list by exact logit (the twin of kernels/list_scores.py).

A list index (index/clusters.py) holds its classes in CSR form: `order` (m,) int64 class ids
list by list, `offsets` (C + 1,) int64, list c = order[offsets[c]:offsets[c + 1]]. Query i
probes the lists `lists[i]` (p of them); for each (query, list) pair this keeps the
k' = min(k, max_list) members of largest logit z = h_i . w_c (+ b_c), best first:

    scores (N, p, k') float32: the logits; -inf in empty slots (list shorter than k'), for a
                               masked class (bias -inf) and for a NaN logit
    ids    (N, p, k') int64:   the class ids; -1 wherever the score is -inf

The top k of a query's union is the top k of its (p, k') scores (lists are disjoint), so a
caller never holds more than O(N p k') of them. Padded gather formulation: (N, p, max_list)
ids, scored by one batched product per chunk of queries. No host read (fixed shapes from
the arguments only), so this runs inside a training step on any device.
"""

from __future__ import annotations

import torch

from .sampled_logits import acc_dtype, row_dots

# rows of one gather (chunk x p x max_list x d floats) are bounded by this many: ~64 MiB fp32
# on a CPU (cache-sized blocks), ~512 MiB on a GPU, where each chunk costs a few launches
# and at n = 10^6, N = 4096, p = 16 the CPU bound would mean thousands of them per search
# (this twin is the CUDA path of ops.list_topk since 2026-12-01)
GATHER_FLOATS = 1 << 24
GATHER_FLOATS_CUDA = 1 << 27


def list_topk_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    order: torch.Tensor,
    offsets: torch.Tensor,
    lists: torch.Tensor,
    k: int,
    max_list: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (N, p, k') float32, ids (N, p, k') int64), k' = min(k, max_list), best first.

    hidden: (N, d) float; weight: (n, d); bias: (n,) or None; order: (m,) int64 class ids list
    by list; offsets: (C + 1,) int64; lists: (N, p) int64 list ids; max_list: at least the
    size of every list. Logits are accumulated in fp32 (fp64 for fp64 inputs)."""
    N, p = lists.shape
    kk = max(0, min(int(k), int(max_list)))
    device = hidden.device
    scores = torch.full((N, p, kk), float("-inf"), dtype=torch.float32, device=device)
    ids = torch.full((N, p, kk), -1, dtype=torch.int64, device=device)
    if N == 0 or p == 0 or kk == 0 or order.numel() == 0:
        return scores, ids
    acc = acc_dtype(torch.promote_types(hidden.dtype, weight.dtype))
    start = offsets[lists]
    end = offsets[lists + 1]
    pos = start.unsqueeze(2) + torch.arange(max_list, device=device)  # (N, p, max_list)
    ok = pos < end.unsqueeze(2)
    members = order[torch.where(ok, pos, torch.zeros_like(pos))]
    budget = GATHER_FLOATS_CUDA if hidden.is_cuda else GATHER_FLOATS
    step = max(1, budget // max(1, p * max_list * weight.shape[1]))
    h = hidden.to(acc)
    for lo in range(0, N, step):
        hi = min(N, lo + step)
        m = members[lo:hi].reshape(hi - lo, -1)
        z = row_dots(weight[m].to(acc), h[lo:hi])
        if bias is not None:
            z = z + bias[m].to(acc)
        z = z.view(hi - lo, p, max_list)
        z = torch.where(ok[lo:hi] & ~torch.isnan(z), z, torch.full_like(z, float("-inf")))
        s, at = torch.topk(z, kk, dim=2)
        top = torch.gather(members[lo:hi], 2, at)
        s = s.float()
        scores[lo:hi] = s
        ids[lo:hi] = torch.where(s == float("-inf"), torch.full_like(top, -1), top)
    return scores, ids
