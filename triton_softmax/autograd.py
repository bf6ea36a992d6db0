"""torch.autograd.Functions tying the kernels (or their twins, see ops.py) into the graph."""

from __future__ import annotations

import torch

from . import estimator as _est
from . import ops


class SampledSoftmaxFunction(torch.autograd.Function):
    """Per-example estimator loss (N,) fp32 (fp64 for fp64 inputs); backward touches only candidate rows of W.

    hidden (N, d), weight (n, d), bias (n,) | None, cand_ids (N, M) int64,
    cand_logw (N, M) float32, target (N,) int64 in [0, n).
    sparse_grad: the weight (and bias) gradient is a sparse COO tensor of candidate rows.
    deterministic: dense dW by sort + segment-reduce instead of atomics (Triton path).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, cand_ids, cand_logw, target, sparse_grad, deterministic):
        loss, lse = ops.sampled_logits_fwd(hidden, weight, bias, cand_ids, cand_logw, target)
        ctx.save_for_backward(hidden, weight, bias, cand_ids, cand_logw, target, lse)
        ctx.sparse_grad, ctx.deterministic = sparse_grad, deterministic
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, bias, cand_ids, cand_logw, target, lse = ctx.saved_tensors
        n = weight.shape[0]
        dh = dW = db = None
        if ctx.needs_input_grad[0]:  # coefficients and dh in one pass over the candidate rows
            coef, ids, dh = ops.sampled_logits_bwd(
                grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse
            )
            dh = dh.to(hidden.dtype)
        else:
            coef, ids = ops.sampled_logits_coef(
                grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse
            )
        if ctx.needs_input_grad[1]:
            if ctx.sparse_grad:
                dW = _est.sparse_grad_weight_ref(coef, ids, hidden, n, weight.dtype)
            else:
                dW = ops.scatter_grad_weight(coef, ids, hidden, n, ctx.deterministic)
                dW = dW.to(weight.dtype)
        if bias is not None and ctx.needs_input_grad[2]:
            db = _est.scatter_grad_bias_ref(coef, ids, n, ctx.sparse_grad).to(bias.dtype)
        return dh, dW, db, None, None, None, None, None


class ChunkedCrossEntropyFunction(torch.autograd.Function):
    """Exact per-example cross-entropy (N,) fp32 (fp64 for fp64) without an (N, n) logits tensor."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, label_smoothing):
        loss, lse = ops.chunked_ce_fwd(hidden, weight, bias, target, label_smoothing)
        ctx.save_for_backward(hidden, weight, bias, target, lse)
        ctx.label_smoothing = label_smoothing
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, bias, target, lse = ctx.saved_tensors
        dh, dW, db = ops.chunked_ce_bwd(
            grad_loss, hidden, weight, bias, target, lse, ctx.label_smoothing
        )
        dh = dh.to(hidden.dtype) if ctx.needs_input_grad[0] else None
        dW = dW.to(weight.dtype) if ctx.needs_input_grad[1] else None
        db = db.to(bias.dtype) if (bias is not None and ctx.needs_input_grad[2]) else None
        return dh, dW, db, None, None
