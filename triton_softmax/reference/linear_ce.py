"""The exact softmax cross-entropy, computed over chunks of classes (PyTorch; CPU path and twin).

    z_ij   = h_i . W_j + b_j                   for all n classes
    lse_i  = log sum_j exp(z_ij)
    loss_i = lse_i - (1 - eps) z_{i,y_i} - eps/n sum_j z_ij      (eps = label smoothing)
    dz_ij  = softmax_ij - (1 - eps) 1[j = y_i] - eps/n

Classes are processed in chunks, so memory is O(N * chunk) and an (N, n) logits tensor is
never allocated: the forward keeps a running log-sum-exp, the backward recomputes each chunk's
logits and writes that chunk's rows of dW. This is the oracle for the fused Triton kernel.
"""

from __future__ import annotations

import torch

from .sampled_logits import _cap_slope, acc_dtype, cap_logits, nan_at_inf_lse

# Logit elements per chunk (N * chunk): 4 Mi fp32 values = 16 MiB.
CHUNK_ELEMENTS = 1 << 22


def class_chunk(N: int, n: int) -> int:
    return max(256, min(n, CHUNK_ELEMENTS // max(N, 1)))


def _chunk_logits(h, weight, bias, lo, hi, acc, softcap=0.0):
    z = h @ weight[lo:hi].to(acc).T
    if bias is not None:
        z = z + bias[lo:hi].to(acc)
    return cap_logits(z, softcap)


def chunked_ce_fwd_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
    chunk: int | None = None,
    softcap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """loss (N,), lse (N,) in the accumulation dtype. target: (N,) int64 in [0, n).

    softcap c > 0: logits c tanh(z / c) (twin only; the fused kernel does not implement it).
    """
    N, n = hidden.shape[0], weight.shape[0]
    acc = acc_dtype(hidden.dtype)
    chunk = chunk or class_chunk(N, n)
    h = hidden.to(acc)
    lse = torch.full((N,), float("-inf"), dtype=acc, device=hidden.device)
    z_sum = torch.zeros(N, dtype=acc, device=hidden.device)
    # The target logit is read from its chunk's logits, the values the lse sums: a confident
    # row's loss is then exactly 0, as torch's, even for float32 logits near 1e30.
    z_t = torch.zeros(N, dtype=acc, device=hidden.device)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        z = _chunk_logits(h, weight, bias, lo, hi, acc, softcap)
        lse = torch.logaddexp(lse, torch.logsumexp(z, dim=1))
        in_chunk = (target >= lo) & (target < hi)
        col = (target - lo).clamp(0, hi - lo - 1).unsqueeze(1)
        z_t = torch.where(in_chunk, z.gather(1, col).squeeze(1), z_t)
        if label_smoothing and softcap:
            z_sum += z.sum(1)
    loss = lse - (1.0 - label_smoothing) * z_t
    if label_smoothing and softcap:
        loss = loss - label_smoothing / n * z_sum
    elif label_smoothing:
        # sum_j z_ij is linear in h: h . sum_j W_j + sum_j b_j, no logits needed.
        z_sum = h @ weight.to(acc).sum(0)
        if bias is not None:
            z_sum = z_sum + bias.to(acc).sum()
        loss = loss - label_smoothing / n * z_sum
    return nan_at_inf_lse(loss, lse), lse


def chunked_ce_bwd_ref(
    grad_loss: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    lse: torch.Tensor,
    label_smoothing: float = 0.0,
    chunk: int | None = None,
    softcap: float = 0.0,
    target_grad: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(dh (N, d), dW (n, d), db (n,) or None), in the accumulation dtype.

    target_grad: the gradient of the one-hot and smoothing terms when it differs from
    grad_loss's (z-loss scales only the softmax part); default grad_loss.
    """
    N, n = hidden.shape[0], weight.shape[0]
    acc = lse.dtype
    chunk = chunk or class_chunk(N, n)
    h = hidden.to(acc)
    g = grad_loss.to(acc).unsqueeze(1)
    g_t = g if target_grad is None else target_grad.to(acc).unsqueeze(1)
    dh = torch.zeros_like(h)
    dW = torch.empty(weight.shape, dtype=acc, device=weight.device)
    db = torch.empty(n, dtype=acc, device=weight.device) if bias is not None else None
    rows = torch.arange(N, device=hidden.device)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        z = _chunk_logits(h, weight, bias, lo, hi, acc, softcap)
        onehot = torch.zeros_like(z)
        if label_smoothing:
            onehot += label_smoothing / n
        in_chunk = (target >= lo) & (target < hi)
        col = (target - lo).clamp(0, hi - lo - 1)
        onehot[rows, col] += in_chunk.to(acc) * (1.0 - label_smoothing)
        dz = (g * torch.exp(z - lse.unsqueeze(1)) - g_t * onehot) * _cap_slope(z, softcap)
        dh += dz @ weight[lo:hi].to(acc)
        dW[lo:hi] = dz.T @ h
        if db is not None:
            db[lo:hi] = dz.sum(0)
    return dh, dW, db
