"""Inference helpers: exact top-k (chunked), rerank of retrieved candidates, recall@k."""

from __future__ import annotations

import torch


def exact_topk(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    k: int,
    bias: torch.Tensor | None = None,
    chunk: int = 1 << 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k logits over all classes, in chunks: (scores (N, k) float32, ids (N, k) int64)."""
    N, n = hidden.shape[0], weight.shape[0]
    k = min(k, n)
    best_s = torch.full((N, 0), float("-inf"), device=hidden.device)
    best_i = torch.zeros((N, 0), dtype=torch.int64, device=hidden.device)
    h = hidden.float()
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        z = h @ weight[lo:hi].float().T
        if bias is not None:
            z = z + bias[lo:hi].float()
        s = torch.cat([best_s, z], dim=1)
        i = torch.cat([best_i, torch.arange(lo, hi, device=hidden.device).expand(N, -1)], dim=1)
        best_s, pos = torch.topk(s, min(k, s.shape[1]), dim=1)
        best_i = torch.gather(i, 1, pos)
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
    z = torch.bmm(weight[safe].float(), hidden.float().unsqueeze(2)).squeeze(2)
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
