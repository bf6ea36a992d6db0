"""torch.autograd.Functions tying the kernels (or their twins, see ops.py) into the graph."""

from __future__ import annotations

import torch

from . import estimator as _est
from . import full as _full
from . import ops


class SampledSoftmaxFunction(torch.autograd.Function):
    """Per-example estimator loss (N,) fp32 (fp64 for fp64); backward touches only candidate rows.

    hidden (N, d), weight (n, d), bias (n,) | None, cand_ids (N, M) int64,
    cand_logw (N, M) float32, target (N,) int64 in [0, n).
    sparse_grad: the weight (and bias) gradient is a sparse COO tensor of candidate rows.
    deterministic: dense dW by sort + segment-reduce instead of atomics (Triton path).
    """

    @staticmethod
    def forward(
        ctx,
        hidden,
        weight,
        bias,
        cand_ids,
        cand_logw,
        target,
        sparse_grad,
        deterministic,
        z_loss,
        softcap,
    ):
        if softcap:  # soft-capping runs the twin (the kernels do not implement it)
            loss, lse = _est.sampled_logits_fwd_ref(
                hidden, weight, bias, cand_ids, cand_logw, target, softcap
            )
        else:
            loss, lse = ops.sampled_logits_fwd(hidden, weight, bias, cand_ids, cand_logw, target)
        ctx.save_for_backward(hidden, weight, bias, cand_ids, cand_logw, target, lse)
        ctx.sparse_grad, ctx.deterministic, ctx.z_loss = sparse_grad, deterministic, z_loss
        ctx.softcap = softcap
        return loss + z_loss * lse.square() if z_loss else loss

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, bias, cand_ids, cand_logw, target, lse = ctx.saved_tensors
        n = weight.shape[0]
        dh = dW = db = None
        g_p, delta = _z_loss_scale(grad_loss, lse, ctx.z_loss)
        if ctx.softcap:  # the twin takes the target term's gradient directly
            coef, ids, dh = _est.sampled_logits_bwd_ref(
                g_p,
                hidden,
                weight,
                bias,
                cand_ids,
                cand_logw,
                target,
                lse,
                ctx.softcap,
                None if delta is None else grad_loss,
            )
            delta = None
        elif ctx.needs_input_grad[0]:  # coefficients and dh in one pass over the candidate rows
            coef, ids, dh = ops.sampled_logits_bwd(
                g_p, hidden, weight, bias, cand_ids, cand_logw, target, lse
            )
        else:
            coef, ids = ops.sampled_logits_coef(
                g_p, hidden, weight, bias, cand_ids, cand_logw, target, lse
            )
        coef, dh = _fix_target_term(coef, dh, delta, weight, target)
        if dh is not None:
            dh = dh.to(hidden.dtype)
        if ctx.needs_input_grad[1]:
            if ctx.sparse_grad:
                dW = _est.sparse_grad_weight_ref(coef, ids, hidden, n, weight.dtype)
            else:
                dW = ops.scatter_grad_weight(coef, ids, hidden, n, ctx.deterministic)
                dW = dW.to(weight.dtype)
        if bias is not None and ctx.needs_input_grad[2]:
            db = _est.scatter_grad_bias_ref(coef, ids, n, ctx.sparse_grad).to(bias.dtype)
        return dh, dW, db, None, None, None, None, None, None, None


def _z_loss_scale(grad_loss, lse, z_loss):
    """z-loss adds z_loss * lse^2: the softmax part of the gradient scales by 1 + 2 z_loss lse.

    Returns (g_p, delta): the scaled gradient the kernels run with, and g_p - g, the excess
    they then put on the target term (fixed by _fix_target_term), or (grad_loss, None)."""
    if not z_loss:
        return grad_loss, None
    g = grad_loss.to(lse.dtype)
    g_p = g * (1.0 + 2.0 * z_loss * lse)
    return g_p, g_p - g


def _fix_target_term(coef, dh, delta, weight, target):
    """The kernels put -g_p on the target; the target's term is -g: add delta = g_p - g back."""
    if delta is None:
        return coef, dh
    coef = coef.clone()
    coef[:, -1] += delta
    if dh is not None:
        dh = dh + delta.unsqueeze(1) * weight[target].to(dh.dtype)
    return coef, dh


class ChunkedCrossEntropyFunction(torch.autograd.Function):
    """Exact per-example cross-entropy (N,) fp32 (fp64 for fp64) without an (N, n) logits tensor."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, label_smoothing, z_loss, softcap, sparse_grad):
        if softcap:  # soft-capping runs the chunked twin (the fused kernel does not implement it)
            loss, lse = _full.chunked_ce_fwd_ref(
                hidden, weight, bias, target, label_smoothing, softcap=softcap
            )
        else:
            loss, lse = ops.chunked_ce_fwd(hidden, weight, bias, target, label_smoothing)
        ctx.save_for_backward(hidden, weight, bias, target, lse)
        ctx.label_smoothing, ctx.z_loss, ctx.softcap = label_smoothing, z_loss, softcap
        ctx.sparse_grad = sparse_grad
        return loss + z_loss * lse.square() if z_loss else loss

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, bias, target, lse = ctx.saved_tensors
        eps = ctx.label_smoothing
        g_p, delta = _z_loss_scale(grad_loss, lse, ctx.z_loss)
        if ctx.softcap:  # the twin takes the one-hot terms' gradient directly
            dh, dW, db = _full.chunked_ce_bwd_ref(
                g_p,
                hidden,
                weight,
                bias,
                target,
                lse,
                eps,
                softcap=ctx.softcap,
                target_grad=None if delta is None else grad_loss,
            )
            delta = None
        else:
            dh, dW, db = ops.chunked_ce_bwd(g_p, hidden, weight, bias, target, lse, eps)
        if delta is not None:
            # the kernels scaled the one-hot and smoothing terms by g_p too; they take g:
            # add delta ((1 - eps) 1[j = y] + eps / n) back to dz
            n = weight.shape[0]
            acc = dh.dtype
            h = hidden.to(acc)
            dh = dh + (1.0 - eps) * delta.unsqueeze(1) * weight[target].to(acc)
            dW = dW.index_add(0, target, (1.0 - eps) * delta.unsqueeze(1) * h)
            if db is not None:
                db = db.index_add(0, target, (1.0 - eps) * delta)
            if eps:
                dh = dh + (eps / n) * delta.unsqueeze(1) * weight.to(acc).sum(0)
                dW = dW + (eps / n) * (delta.unsqueeze(1) * h).sum(0)
                if db is not None:
                    db = db + (eps / n) * delta.sum()
        dh = dh.to(hidden.dtype) if ctx.needs_input_grad[0] else None
        dW = dW.to(weight.dtype) if ctx.needs_input_grad[1] else None
        db = db.to(bias.dtype) if (bias is not None and ctx.needs_input_grad[2]) else None
        if ctx.sparse_grad:  # every row: sparse only so that sparse optimizers accept it
            dW = dW.to_sparse() if dW is not None else None
            db = db.to_sparse() if db is not None else None
        return dh, dW, db, None, None, None, None, None


class SharedCandidatesFunction(torch.autograd.Function):
    """Estimator loss (N,) over per-example S (gathered) plus batch-shared ids (one matmul).

    hidden (N, d), weight (n, d), bias | None, s_ids (N, R) int64, s_logw (N, R),
    shared_ids (M,) int64, shared_logw (N, M) per-example log-weights (-inf = excluded),
    target (N,). The S part runs through the same ops as SampledSoftmaxFunction (Triton on
    CUDA): its kernel gives lse_S (-inf for an empty S); the shared part is a dense product,
    lse = logaddexp(lse_S, lse_shared), and the S backward is the kernel's with the total lse.
    dW rows of S by scatter-add, of the shared ids by one (M, N) x (N, d) product; dense or
    sparse like SampledSoftmaxFunction.
    """

    @staticmethod
    def forward(
        ctx,
        hidden,
        weight,
        bias,
        s_ids,
        s_logw,
        shared_ids,
        shared_logw,
        target,
        sparse_grad,
        z_loss,
    ):
        _, lse_s = ops.sampled_logits_fwd(hidden, weight, bias, s_ids, s_logw, target)
        acc = lse_s.dtype
        z_y = (weight[target].to(acc) * hidden.to(acc)).sum(1)  # direct: lse_S may be -inf
        if bias is not None:
            z_y = z_y + bias[target].to(acc)
        w_sh = weight[shared_ids].to(acc)
        z_sh = hidden.to(acc) @ w_sh.T  # (N, M)
        if bias is not None:
            z_sh = z_sh + bias[shared_ids].to(acc)
        z_sh = z_sh.add_(shared_logw.to(acc))  # weighted logits: all the backward needs
        lse = torch.logaddexp(lse_s, torch.logsumexp(z_sh, dim=1))
        ctx.save_for_backward(
            hidden, weight, bias, s_ids, s_logw, shared_ids, shared_logw, target, lse, z_sh, w_sh
        )
        ctx.sparse_grad, ctx.z_loss = sparse_grad, z_loss
        loss = lse - z_y
        return loss + z_loss * lse.square() if z_loss else loss

    @staticmethod
    def backward(ctx, grad_loss):
        (hidden, weight, bias, s_ids, s_logw, shared_ids, shared_logw, target, lse, z_sh, w_sh) = (
            ctx.saved_tensors
        )
        n, d = weight.shape
        acc = lse.dtype
        g_p, delta = _z_loss_scale(grad_loss, lse, ctx.z_loss)
        coef, ids, dh = ops.sampled_logits_bwd(
            g_p, hidden, weight, bias, s_ids, s_logw, target, lse
        )
        coef, dh = _fix_target_term(coef, dh, delta, weight, target)
        coef_sh = torch.sub(z_sh, lse.unsqueeze(1)).exp_()  # z_sh holds z + log w
        coef_sh.mul_(g_p.to(acc).unsqueeze(1))
        dh = dh + coef_sh @ w_sh  # w_sh: the shared rows gathered in forward
        rows_sh = coef_sh.T @ hidden.to(acc)  # (M, d)
        dW = db = None
        if ctx.needs_input_grad[1]:
            if ctx.sparse_grad:
                dW = _est.sparse_grad_weight_ref(
                    coef, ids, hidden, n, weight.dtype, shared_ids, rows_sh
                )
            else:
                dW = ops.scatter_grad_weight(coef, ids, hidden, n, False)
                dW = dW.index_add_(0, shared_ids, rows_sh.to(dW.dtype)).to(weight.dtype)
        if bias is not None and ctx.needs_input_grad[2]:
            db = _est.scatter_grad_bias_ref(coef, ids, n, ctx.sparse_grad)
            db_sh = coef_sh.sum(0)
            if ctx.sparse_grad:
                db = db + torch.sparse_coo_tensor(
                    shared_ids.unsqueeze(0), db_sh, (n,), check_invariants=False
                )
            else:
                db = db.index_add_(0, shared_ids, db_sh)
            db = db.to(bias.dtype)
        return dh.to(hidden.dtype), dW, db, None, None, None, None, None, None, None


class BucketTileFunction(torch.autograd.Function):
    """Per table and query, the log-sum-exp of its bucket tile: (L, N) fp32 (fp64 for fp64).

    hidden (N, d), weight (n, d), bias (n,) | None, target (N,) int64 in [0, n), query_codes
    (N, L) and key_codes (n, L) int32, sorted_ids (L, n) and offsets (L, 2^K + 1) from the
    LSH index. Dense gradients for hidden, weight and bias (see bucket_tiles.py).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, query_codes, key_codes, sorted_ids, offsets):
        lse = ops.bucket_tile_lse(
            hidden, weight, bias, target, query_codes, key_codes, sorted_ids, offsets
        )
        ctx.save_for_backward(
            hidden, weight, bias, target, query_codes, key_codes, sorted_ids, offsets, lse
        )
        return lse

    @staticmethod
    def backward(ctx, grad_lse):
        hidden, weight, bias, target, qc, kc, ids, off, lse = ctx.saved_tensors
        dh, dw, db = ops.bucket_tile_lse_bwd(
            grad_lse, lse, hidden, weight, bias, target, qc, kc, ids, off
        )
        return (
            dh.to(hidden.dtype),
            dw.to(weight.dtype),
            db.to(bias.dtype) if bias is not None else None,
            None,
            None,
            None,
            None,
            None,
        )
