"""Twin of kernels/sparse_adam.py: torch.optim.SparseAdam's row update, op for op."""

from __future__ import annotations

import torch


def sparse_adam_update_ref(
    param: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    rows: torch.Tensor,
    values: torch.Tensor,
    step_size: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """In place: SparseAdam's update of the rows `rows` of param, exp_avg, exp_avg_sq.

    param, exp_avg, exp_avg_sq: (n, D) float, one dtype; rows: (U,) int64 distinct;
    values: (U, D) gradient rows. step_size = lr sqrt(1 - beta2^t) / (1 - beta1^t).
    The elementwise operations are torch.optim._functional.sparse_adam's, in its order, so
    the result is bitwise SparseAdam's on the same coalesced gradient. The rows go through
    in blocks of about 2^18 elements: the temporaries of a block stay in cache, so each
    touched row of param, exp_avg, exp_avg_sq is read and written about once.
    """
    D = max(param.shape[1], 1)
    block = max(1, (1 << 18) // D)
    for lo in range(0, rows.shape[0], block):
        r, g = rows[lo : lo + block], values[lo : lo + block]
        old_m = exp_avg.index_select(0, r)
        new_m = g.sub(old_m).mul_(1 - beta1).add_(old_m)  # SparseAdam: update + old
        exp_avg.index_copy_(0, r, new_m)
        old_v = exp_avg_sq.index_select(0, r)
        new_v = g.pow(2).sub_(old_v).mul_(1 - beta2).add_(old_v)
        exp_avg_sq.index_copy_(0, r, new_v)
        step = new_m.div_(new_v.sqrt_().add_(eps)).mul_(-step_size)
        param.index_add_(0, r, step)  # rows are distinct: one addition per element
