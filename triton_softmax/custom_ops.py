"""The loss cores as torch.library custom ops, so a compiled training step has no graph break.

torch.compile cannot trace into an autograd.Function that launches Triton kernels or runs the
twins' data-dependent code, so the two hot ops are registered as opaque custom ops with
fake (meta) implementations and autograd formulas:

  triton_softmax::sampled_softmax_fwd / _bwd   the estimator over given candidates
  triton_softmax::linear_ce_fwd / _bwd         the exact cross-entropy (ops.linear_ce_fwd)

Both dispatch through ops.py exactly like the eager autograd Functions (Triton on CUDA, the
twins elsewhere). The compiled path gives dense weight gradients; sparse_grad=True is eager-only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import ops
from .reference.sampled_logits import acc_dtype, scatter_grad_bias_ref


def _empty_like_bias(weight: Tensor) -> Tensor:
    return weight.new_empty((0,))


@torch.library.custom_op("triton_softmax::sampled_softmax_fwd", mutates_args=())
def sampled_softmax_fwd(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    cand_ids: Tensor,
    cand_logw: Tensor,
    target: Tensor,
) -> tuple[Tensor, Tensor]:
    loss, lse = ops.sampled_logits_fwd(hidden, weight, bias, cand_ids, cand_logw, target)
    return loss, lse


def _fake_loss_lse(hidden: Tensor) -> tuple[Tensor, Tensor]:
    """The forwards' fake outputs: loss (N,) and lse (N,) in the accumulation dtype."""
    acc = acc_dtype(hidden.dtype)
    N = hidden.shape[0]
    return hidden.new_empty((N,), dtype=acc), hidden.new_empty((N,), dtype=acc)


@sampled_softmax_fwd.register_fake
def _(hidden, weight, bias, cand_ids, cand_logw, target):
    return _fake_loss_lse(hidden)


@torch.library.custom_op("triton_softmax::sampled_softmax_bwd", mutates_args=())
def sampled_softmax_bwd(
    grad_loss: Tensor,
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    cand_ids: Tensor,
    cand_logw: Tensor,
    target: Tensor,
    lse: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    n = weight.shape[0]
    coef, ids, dh = ops.sampled_logits_bwd(
        grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse
    )
    dW = ops.scatter_grad_weight(coef, ids, hidden, n, False).to(weight.dtype)
    db = (
        scatter_grad_bias_ref(coef, ids, n).to(bias.dtype)
        if bias is not None
        else _empty_like_bias(weight)
    )
    return dh.to(hidden.dtype), dW, db


@sampled_softmax_bwd.register_fake
def _(grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse):
    db = torch.empty_like(bias) if bias is not None else _empty_like_bias(weight)
    return torch.empty_like(hidden), torch.empty_like(weight), db


def _sampled_setup(ctx, inputs, output):
    hidden, weight, bias, cand_ids, cand_logw, target = inputs
    ctx.save_for_backward(hidden, weight, bias, cand_ids, cand_logw, target, output[1])


def _sampled_backward(ctx, grad_loss, grad_lse):
    hidden, weight, bias, cand_ids, cand_logw, target, lse = ctx.saved_tensors
    dh, dW, db = sampled_softmax_bwd(
        grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse
    )
    return dh, dW, (db if bias is not None else None), None, None, None


sampled_softmax_fwd.register_autograd(_sampled_backward, setup_context=_sampled_setup)


@torch.library.custom_op("triton_softmax::linear_ce_fwd", mutates_args=())
def linear_ce_fwd(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, label_smoothing: float
) -> tuple[Tensor, Tensor]:
    loss, lse = ops.linear_ce_fwd(hidden, weight, bias, target, label_smoothing)
    return loss, lse


@linear_ce_fwd.register_fake
def _(hidden, weight, bias, target, label_smoothing):
    return _fake_loss_lse(hidden)


@torch.library.custom_op("triton_softmax::linear_ce_bwd", mutates_args=())
def linear_ce_bwd(
    grad_loss: Tensor,
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    lse: Tensor,
    label_smoothing: float,
) -> tuple[Tensor, Tensor, Tensor]:
    dh, dW, db = ops.linear_ce_bwd(grad_loss, hidden, weight, bias, target, lse, label_smoothing)
    db = db.to(bias.dtype) if bias is not None else _empty_like_bias(weight)
    return dh.to(hidden.dtype), dW.to(weight.dtype), db


@linear_ce_bwd.register_fake
def _(grad_loss, hidden, weight, bias, target, lse, label_smoothing):
    db = torch.empty_like(bias) if bias is not None else _empty_like_bias(weight)
    return torch.empty_like(hidden), torch.empty_like(weight), db


def _ce_setup(ctx, inputs, output):
    hidden, weight, bias, target, label_smoothing = inputs
    ctx.save_for_backward(hidden, weight, bias, target, output[1])
    ctx.label_smoothing = label_smoothing


def _ce_backward(ctx, grad_loss, grad_lse):
    hidden, weight, bias, target, lse = ctx.saved_tensors
    dh, dW, db = linear_ce_bwd(grad_loss, hidden, weight, bias, target, lse, ctx.label_smoothing)
    return dh, dW, (db if bias is not None else None), None, None


linear_ce_fwd.register_autograd(_ce_backward, setup_context=_ce_setup)

# the Python names before the ops were renamed after the kernel (the ops themselves are
# registered only as triton_softmax::linear_ce_fwd / _bwd)
chunked_ce_fwd = linear_ce_fwd
chunked_ce_bwd = linear_ce_bwd
