"""Test-only references (moved out of the library): the estimator with plain autograd ops,
the batch-shared candidates' maths in float64, the all-classes candidate set."""

import torch

from triton_softmax.reference.sampled_logits import (
    acc_dtype,
    grad_hidden_ref,
    nan_at_inf_lse,
    target_from_candidates,
)


def sampled_softmax_loss_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    cand_ids: torch.Tensor,
    cand_logw: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """The estimator written with plain autograd ops (for gradcheck against the Function)."""
    z = torch.einsum("nd,nmd->nm", hidden, weight[cand_ids])
    z_t = (hidden * weight[target]).sum(1)
    if bias is not None:
        z = z + bias[cand_ids]
        z_t = z_t + bias[target]
    return torch.logsumexp(z + cand_logw.to(z.dtype), dim=1) - z_t


# ---- batch-shared candidates: per-example S (gathered) + shared ids scored as one matmul ----
def _shared_logits(hidden, weight, bias, s_ids, shared_ids, acc):
    h = hidden.to(acc)
    z_s = torch.bmm(weight[s_ids].to(acc), h.unsqueeze(2)).squeeze(2)  # (N, R)
    w_sh = weight[shared_ids].to(acc)  # (M, d): one gather for the whole batch
    z_sh = h @ w_sh.T  # (N, M) dense product
    if bias is not None:
        z_s = z_s + bias[s_ids].to(acc)
        z_sh = z_sh + bias[shared_ids].to(acc)
    return h, z_s, w_sh, z_sh


def shared_logits_fwd_ref(hidden, weight, bias, s_ids, s_logw, shared_ids, shared_logw, target):
    """Estimator loss (N,) and lse (N,) over S_i (gathered) and shared ids (dense)."""
    acc = acc_dtype(hidden.dtype)
    h, z_s, _, z_sh = _shared_logits(hidden, weight, bias, s_ids, shared_ids, acc)
    z_t = (weight[target].to(acc) * h).sum(1)
    if bias is not None:
        z_t = z_t + bias[target].to(acc)
    z_t = target_from_candidates(z_s, s_ids, target, z_t)  # the same value the lse sums
    lse = torch.logsumexp(torch.cat([z_s + s_logw.to(acc), z_sh + shared_logw.to(acc)], 1), 1)
    return nan_at_inf_lse(lse - z_t, lse), lse


def shared_logits_bwd_ref(
    grad_loss, hidden, weight, bias, s_ids, s_logw, shared_ids, shared_logw, target, lse
):
    """(coef (N, R+1) over ids (N, R+1) = [S | target], shared_coef (N, M), dh (N, d))."""
    acc = lse.dtype
    h, z_s, w_sh, z_sh = _shared_logits(hidden, weight, bias, s_ids, shared_ids, acc)
    g = grad_loss.to(acc).unsqueeze(1)
    coef_s = g * torch.exp(z_s + s_logw.to(acc) - lse.unsqueeze(1))
    coef_sh = g * torch.exp(z_sh + shared_logw.to(acc) - lse.unsqueeze(1))
    coef = torch.cat([coef_s, -g], 1)
    ids = torch.cat([s_ids, target.unsqueeze(1)], 1)
    dh = grad_hidden_ref(coef, ids, weight) + coef_sh @ w_sh
    return coef, ids, coef_sh, dh


def all_classes_candidates(
    N: int, n: int, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The degenerate candidate set S = all classes (the estimator is then the exact loss)."""
    ids = torch.arange(n, device=target.device).unsqueeze(0).expand(N, n).contiguous()
    return ids, torch.zeros(N, n, dtype=torch.float32, device=target.device)
