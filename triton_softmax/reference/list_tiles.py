"""The best members of each probed list, as positions in the list (the twin of
kernels/list_tiles.py).

A list index (index/clusters.py) keeps its rows in CSR form: `members` (M,) int64 the row of
each list position (the class ids, or positions in a copy of the rows taken in list order),
`offsets` (C + 1,) int64, list c = members[offsets[c]:offsets[c + 1]]. Query i probes the
lists `lists[i]` (p of them); for each (query, list) pair this keeps the k' = min(k,
max_list) members of largest logit z = h_i . rows_r (+ bias_r), best first:

    scores (N, p, k') float32: the logits; -inf in empty slots (list shorter than k'), for a
                               masked row (bias -inf) and for a NaN logit
    pos    (N, p, k') int64:   the position j in the list (row members[offsets[c] + j]); -1
                               wherever the score is -inf

Tie rule: equal scores keep the smaller position first (positions follow class ids inside a
list, so: the smaller class id); -0.0 and +0.0 are equal and come back as +0.0. Padded gather
formulation: (chunk, p, max_list) rows scored by one batched product per chunk of queries,
then a stable sort. No host read (fixed shapes from the arguments only).
"""

from __future__ import annotations

import torch

from .sampled_logits import acc_dtype, row_dots

GATHER_FLOATS = 1 << 24  # rows of one gather (chunk x p x max_list x d floats): ~64 MiB fp32
GATHER_FLOATS_CUDA = 1 << 27


def list_tile_topk_ref(
    hidden: torch.Tensor,
    rows: torch.Tensor,
    bias: torch.Tensor | None,
    members: torch.Tensor,
    offsets: torch.Tensor,
    lists: torch.Tensor,
    k: int,
    max_list: int,
    tie_by_row: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (N, p, k') float32, pos (N, p, k') int64), k' = min(k, max_list), best first.

    hidden: (N, d) float; rows: (m, d); bias: (m,) or None; members: (M,) int64 (or int32);
    offsets: (C + 1,) int64; lists: (N, p) int64 list ids; max_list: a list is read up to its
    first max_list members (the size of the largest list: all of them); tie_by_row: pos holds
    the member's row (members[offsets[c] + j]) instead of j, and ties keep the smaller row
    first (the SimHash tables' buckets, whose ids are in a random order). Logits are
    accumulated in fp32 (fp64 for fp64 inputs), stored as fp32."""
    N, p = lists.shape
    kk = max(0, min(int(k), int(max_list)))
    device = hidden.device
    scores = torch.full((N, p, kk), float("-inf"), dtype=torch.float32, device=device)
    pos = torch.full((N, p, kk), -1, dtype=torch.int64, device=device)
    if N == 0 or p == 0 or kk == 0 or members.numel() == 0:
        return scores, pos
    acc = acc_dtype(torch.promote_types(hidden.dtype, rows.dtype))
    start = offsets[lists]
    end = offsets[lists + 1]
    at = start.unsqueeze(2) + torch.arange(max_list, device=device)  # (N, p, max_list)
    ok = at < end.unsqueeze(2)
    r = members[torch.where(ok, at, torch.zeros_like(at))]
    budget = GATHER_FLOATS_CUDA if hidden.is_cuda else GATHER_FLOATS
    step = max(1, budget // max(1, p * max_list * rows.shape[1]))
    h = hidden.to(acc)
    for lo in range(0, N, step):
        hi = min(N, lo + step)
        rr = r[lo:hi].reshape(hi - lo, -1)
        z = row_dots(rows[rr].to(acc), h[lo:hi])
        if bias is not None:
            z = z + bias[rr].to(acc)
        z = z.view(hi - lo, p, max_list).float()
        z = torch.where(ok[lo:hi] & ~torch.isnan(z), z, torch.full_like(z, float("-inf")))
        z = torch.where(z == 0, torch.zeros_like(z), z)  # -0.0 -> +0.0
        if tie_by_row:  # rows ascending first: the stable sort then ties by the smaller row
            rk = r[lo:hi].long()
            by_row = torch.argsort(rk, dim=2, stable=True)
            z, rk = z.gather(2, by_row), rk.gather(2, by_row)
        # stable: equal scores keep their order, the smaller position first
        s, j = torch.sort(z, dim=2, descending=True, stable=True)
        s, j = s[..., :kk], j[..., :kk]
        if tie_by_row:
            j = rk.gather(2, j)
        scores[lo:hi] = s
        pos[lo:hi] = torch.where(s == float("-inf"), torch.full_like(j, -1), j)
    return scores, pos
