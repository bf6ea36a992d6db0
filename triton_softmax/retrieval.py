"""Inference helpers: exact top-k (chunked), rerank of retrieved candidates, recall@k."""

from __future__ import annotations

import torch

from .reference.sampled_logits import row_dots


def exact_topk(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    k: int,
    bias: torch.Tensor | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k logits over all classes, in chunks: (scores (N, k) float32, ids (N, k) int64).

    Per chunk of classes: one product, its own top-k, then a merge with the running best
    (N, 2k): no (N, n) buffer, and the big top-k runs over a cache-sized (N, chunk) block.
    chunk: classes per block (default on a CPU: about 2^22 logits, 16 MB, per block, at
    least k: at or below h @ W.T + topk for N = 64 ... 4096 at n = 1.2e5, where 2^20 was 2x
    slower at N = 4096 and 10% faster at N <= 256; bench/results/exact_topk_chunks-20261130.json,
    script at commit 192b72e). On a GPU 2^27 logits, 512 MB: there 2^22 (25 small chunks)
    was 3.9x slower than h @ W.T + topk at N = 1024, n = 1e5 on an H200;
    bench/results/gpu-h200-20261130-smoke/).
    """
    N, n = hidden.shape[0], weight.shape[0]
    k = min(k, n)
    if chunk is None:
        chunk = (1 << (27 if hidden.is_cuda else 22)) // max(N, 1)
    chunk = max(k, min(n, chunk), 1)
    h = hidden.float()
    best_s = torch.full((N, 0), float("-inf"), device=hidden.device)
    best_i = torch.zeros((N, 0), dtype=torch.int64, device=hidden.device)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        w = weight[lo:hi].float()
        z = torch.addmm(bias[lo:hi].float(), h, w.T) if bias is not None else h @ w.T
        s, i = torch.topk(z, min(k, hi - lo), dim=1)
        i += lo
        if best_s.shape[1]:
            s, i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
            s, pos = torch.topk(s, k, dim=1)
            i = torch.gather(i, 1, pos)
        best_s, best_i = s, i
    return best_s, best_i


def rerank_topk(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    candidates: torch.Tensor,
    k: int,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact scores of the candidate ids (N, R) (-1 = empty), top-k of them: (scores, ids)."""
    valid = candidates >= 0
    safe = candidates.clamp_min(0)
    z = row_dots(weight[safe].float(), hidden.float())
    if bias is not None:
        z = z + bias[safe].float()
    z = torch.where(valid, z, torch.full_like(z, float("-inf")))
    s, pos = torch.topk(z, min(k, z.shape[1]), dim=1)
    ids = torch.gather(candidates, 1, pos)
    return s, torch.where(torch.isfinite(s), ids, torch.full_like(ids, -1))


def recall_at_k(approx_ids: torch.Tensor, exact_ids: torch.Tensor) -> float:
    """Mean fraction of each row's exact ids found among its approximate ids."""
    if exact_ids.numel() == 0:
        return float("nan")
    hit = (exact_ids.unsqueeze(2) == approx_ids.unsqueeze(1)).any(dim=2)
    return float(hit.float().mean())
