"""Sparse Adam for the output layer's row-sparse weight gradient, fused into one row pass.

`FusedSparseAdam` is a drop-in for torch.optim.SparseAdam (same arguments, same state keys
"step", "exp_avg", "exp_avg_sq", same arithmetic): per parameter and step it takes the
touched rows of the sparse gradient and updates param, exp_avg and exp_avg_sq there in one
pass (kernels/sparse_adam.py on CUDA, reference/sparse_adam.py elsewhere). What it skips:

  - the coalesce: a gradient that says it is coalesced (SampledSoftmaxLoss(sparse_grad=True)
    returns one: unique rows, summed) is used as it is; an uncoalesced one is coalesced
    first, as SparseAdam does (the update is non-linear in the gradient);
  - SparseAdam's sparse_mask / sparse add passes: the twin gathers the touched rows once,
    updates them with SparseAdam's operations in SparseAdam's order, and writes them back.

Works for any parameter whose gradient is sparse in its first dimension ((n, d) weights,
(n,) biases). Dense gradients raise, as in SparseAdam. No host sync: the step count is a
Python int, as in SparseAdam.
"""

from __future__ import annotations

import math

import torch

from . import ops
from .reference.sparse_adam import sparse_adam_update_ref  # noqa: F401  (the twin)


class FusedSparseAdam(torch.optim.Optimizer):
    """torch.optim.SparseAdam's algorithm with one fused row pass (see the module docstring).

    params: parameters with sparse gradients (sparse in dim 0); lr, betas, eps, maximize as
    in torch.optim.SparseAdam (same validation, same defaults).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
    ) -> None:
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, maximize=maximize))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not grad.is_sparse:
                    raise RuntimeError(
                        "FusedSparseAdam does not support dense gradients, please consider "
                        "Adam instead"
                    )
                if grad.sparse_dim() != 1:
                    raise RuntimeError(
                        f"FusedSparseAdam needs a gradient sparse in dim 0 only, got "
                        f"sparse_dim={grad.sparse_dim()}"
                    )
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                if not grad.is_coalesced():  # SparseAdam's coalesce, only where needed
                    grad = grad.coalesce()
                rows, values = grad._indices()[0], grad._values()
                if values.numel() == 0:
                    continue
                if group["maximize"]:
                    values = -values
                t = state["step"]
                lr = group["lr"]
                lr = float(lr) if not isinstance(lr, torch.Tensor) else lr.item()
                step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
                n = p.shape[0]
                ops.sparse_adam_update(
                    p.view(n, -1),
                    state["exp_avg"].view(n, -1),
                    state["exp_avg_sq"].view(n, -1),
                    rows,
                    values.reshape(rows.shape[0], -1),
                    step_size,
                    beta1,
                    beta2,
                    group["eps"],
                )
        return loss
