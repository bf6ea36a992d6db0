"""torch.autograd.Functions tying the kernels (or their twins, see ops.py) into the graph.

Each loss Function takes its tensors and one LossParams (label smoothing, z-loss, softcap,
sparse / deterministic gradients); the old trailing positional flags are still accepted
(LossParams.from_flags). The z-loss is added in one place (_add_z_loss) and its gradient
fixed up in one place per gradient layout (_z_loss_scale, then _fix_target_term on candidate
coefficients; the exact path passes the target terms' gradient to ops.linear_ce_bwd).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import ops
from .reference.sampled_logits import (
    sampled_logits_bwd_rows_ref,
    sampled_logits_fwd_rows_ref,
    scatter_grad_bias_ref,
    sparse_grad_weight_ref,
)


@dataclass(frozen=True)
class LossParams:
    """The non-tensor inputs of the loss Functions."""

    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float = 0.0
    sparse_grad: bool = False
    deterministic: bool = False

    @classmethod
    def from_flags(cls, flags: tuple, names: tuple[str, ...]) -> LossParams:
        """(params,) or the old positional flags, named by `names`, as one LossParams."""
        if len(flags) == 1 and isinstance(flags[0], LossParams):
            return flags[0]
        if len(flags) != len(names):
            raise TypeError(f"expected a LossParams or the flags {names}, got {len(flags)}")
        return cls(**dict(zip(names, flags)))


def _add_z_loss(loss: torch.Tensor, lse: torch.Tensor, z_loss: float) -> torch.Tensor:
    """PaLM's z-loss: loss + z_loss * lse^2 per row (nothing when z_loss is 0)."""
    return loss + z_loss * lse.square() if z_loss else loss


class SampledSoftmaxFunction(torch.autograd.Function):
    """Per-example estimator loss (N,) fp32 (fp64 for fp64); backward touches only candidate rows.

    hidden (N, d), weight (n, d), bias (n,) | None, cand_ids (N, M) int64,
    cand_logw (N, M) float32, target (N,) int64 in [0, n).
    sparse_grad: the weight (and bias) gradient is a sparse COO tensor of candidate rows.
    deterministic: dense dW by sort + segment-reduce instead of atomics (Triton path).
    """

    FLAGS = ("sparse_grad", "deterministic", "z_loss", "softcap")  # the old positional flags

    @staticmethod
    def forward(ctx, hidden, weight, bias, cand_ids, cand_logw, target, *params):
        p = LossParams.from_flags(params, SampledSoftmaxFunction.FLAGS)
        # soft-capping runs the twin (ops: no kernel implements it)
        loss, lse, rows, z = _sampled_fwd(hidden, weight, bias, cand_ids, cand_logw, target, p)
        ctx.save_for_backward(hidden, weight, bias, cand_ids, cand_logw, target, lse, rows, z)
        ctx.sparse_grad, ctx.deterministic, ctx.z_loss = p.sparse_grad, p.deterministic, p.z_loss
        ctx.softcap, ctx.num_params = p.softcap, len(params)
        return _add_z_loss(loss, lse, p.z_loss)

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, bias, cand_ids, cand_logw, target, lse, rows, z = ctx.saved_tensors
        n = weight.shape[0]
        dh = None
        g_p, delta = _z_loss_scale(grad_loss, lse, ctx.z_loss)
        if rows is not None:  # the forward kept the rows: the twin, no second gather
            target_grad = grad_loss if ctx.softcap and delta is not None else None
            coef, ids, dh = sampled_logits_bwd_rows_ref(
                g_p, rows, z, cand_ids, cand_logw, target, lse, ctx.softcap, target_grad
            )
            dh = dh if ctx.needs_input_grad[0] else None
            if ctx.softcap:  # as below: the twin took the target term's gradient
                delta = None
        elif ctx.softcap:  # the twin takes the target term's gradient directly
            coef, ids, dh = ops.sampled_logits_bwd(
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
        dW, db = candidate_weight_grads(ctx, coef, ids, hidden, weight, bias, n)
        return (dh, dW, db, None, None, None) + (None,) * ctx.num_params


def _sampled_fwd(hidden, weight, bias, cand_ids, cand_logw, target, p: LossParams):
    """(loss, lse, rows, z): ops.sampled_logits_fwd, or on the twin path while the rows fit
    (ops.keeps_rows) the twin that keeps the gathered rows and their logits for the
    backward (sampled_logits_bwd_rows_ref); rows = z = None otherwise."""
    if ops.keeps_rows(hidden, weight, cand_ids):
        return sampled_logits_fwd_rows_ref(
            hidden, weight, bias, cand_ids, cand_logw, target, p.softcap
        )
    loss, lse = ops.sampled_logits_fwd(hidden, weight, bias, cand_ids, cand_logw, target, p.softcap)
    return loss, lse, None, None


def candidate_weight_grads(ctx, coef, ids, hidden, weight, bias, n):
    """(dW, db) from the backward coefficients coef (N, M+1) over ids (N, M+1): sparse
    (ctx.sparse_grad) or dense (n, d) / (n,) in weight's and bias's dtypes; None where
    ctx.needs_input_grad says the gradient is not wanted (weight: input 1, bias: input 2)."""
    dW = db = None
    if ctx.needs_input_grad[1]:
        if ctx.sparse_grad:
            dW = sparse_grad_weight_ref(coef, ids, hidden, n, weight.dtype)
        else:
            dW = ops.scatter_grad_weight(coef, ids, hidden, n, ctx.deterministic)
            dW = dW.to(weight.dtype)
    if bias is not None and ctx.needs_input_grad[2]:
        db = scatter_grad_bias_ref(coef, ids, n, ctx.sparse_grad).to(bias.dtype)
    return dW, db


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

    FLAGS = ("label_smoothing", "z_loss", "softcap", "sparse_grad")  # the old positional flags

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, *params):
        p = LossParams.from_flags(params, ChunkedCrossEntropyFunction.FLAGS)
        # soft-capping runs the chunked twin (ops: the fused kernel does not implement it)
        loss, lse = ops.linear_ce_fwd(hidden, weight, bias, target, p.label_smoothing, p.softcap)
        ctx.save_for_backward(hidden, weight, bias, target, lse)
        ctx.label_smoothing, ctx.z_loss, ctx.softcap = p.label_smoothing, p.z_loss, p.softcap
        ctx.sparse_grad, ctx.num_params = p.sparse_grad, len(params)
        return _add_z_loss(loss, lse, p.z_loss)

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, bias, target, lse = ctx.saved_tensors
        eps = ctx.label_smoothing
        g_p, delta = _z_loss_scale(grad_loss, lse, ctx.z_loss)
        # the one-hot terms' own gradient goes in (ops puts it on whichever path runs): the
        # chunked kernel writes dW once in the weight's dtype, with no fix-up pass after it
        dh, dW, db = ops.linear_ce_bwd(
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
        dh = dh.to(hidden.dtype) if ctx.needs_input_grad[0] else None
        dW = dW.to(weight.dtype) if ctx.needs_input_grad[1] else None
        db = db.to(bias.dtype) if (bias is not None and ctx.needs_input_grad[2]) else None
        if ctx.sparse_grad:  # every row: sparse only so that sparse optimizers accept it
            dW = dW.to_sparse() if dW is not None else None
            db = db.to_sparse() if db is not None else None
        return (dh, dW, db, None) + (None,) * ctx.num_params


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

    FLAGS = ("sparse_grad", "z_loss")  # the old positional flags

    @staticmethod
    def forward(ctx, hidden, weight, bias, s_ids, s_logw, shared_ids, shared_logw, target, *params):
        p = LossParams.from_flags(params, SharedCandidatesFunction.FLAGS)
        _, lse_s, rows, z = _sampled_fwd(hidden, weight, bias, s_ids, s_logw, target, LossParams())
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
        # a +inf logit in S or the shared part: NaN as torch's log_softmax (z - max) gives,
        # in the loss and, through lse, in the row's gradients
        lse = torch.where(lse == float("inf"), torch.full_like(lse, float("nan")), lse)
        ctx.save_for_backward(
            hidden, weight, bias, s_ids, s_logw, shared_ids, shared_logw, target, lse, z_sh, w_sh,
            rows, z,
        )  # fmt: skip
        ctx.sparse_grad, ctx.z_loss, ctx.num_params = p.sparse_grad, p.z_loss, len(params)
        return _add_z_loss(lse - z_y, lse, p.z_loss)

    @staticmethod
    def backward(ctx, grad_loss):
        (hidden, weight, bias, s_ids, s_logw, shared_ids, shared_logw, target, lse, z_sh, w_sh) = (
            ctx.saved_tensors[:11]
        )
        rows, z = ctx.saved_tensors[11:]
        n, d = weight.shape
        acc = lse.dtype
        g_p, delta = _z_loss_scale(grad_loss, lse, ctx.z_loss)
        if rows is not None:
            coef, ids, dh = sampled_logits_bwd_rows_ref(g_p, rows, z, s_ids, s_logw, target, lse)
        else:
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
                dW = sparse_grad_weight_ref(coef, ids, hidden, n, weight.dtype, shared_ids, rows_sh)
            else:
                dW = ops.scatter_grad_weight(coef, ids, hidden, n, False)
                dW = dW.index_add_(0, shared_ids, rows_sh.to(dW.dtype)).to(weight.dtype)
        if bias is not None and ctx.needs_input_grad[2]:
            db = scatter_grad_bias_ref(coef, ids, n, ctx.sparse_grad)
            db_sh = coef_sh.sum(0)
            if ctx.sparse_grad:
                db = db + torch.sparse_coo_tensor(
                    shared_ids.unsqueeze(0), db_sh, (n,), check_invariants=False
                )
            else:
                db = db.index_add_(0, shared_ids, db_sh)
            db = db.to(bias.dtype)
        return (dh.to(hidden.dtype), dW, db) + (None,) * (5 + ctx.num_params)


class BucketTileFunction(torch.autograd.Function):
    """Per table and query, the log-sum-exp of its bucket tile: (L, N) fp32 (fp64 for fp64).

    hidden (N, d), weight (n, d), bias (n,) | None, target (N,) int64 in [0, n), query_codes
    (N, L) and key_codes (n, L) int32, sorted_ids (L, n) and offsets (L, 2^K + 1) from the
    LSH index. Dense gradients for hidden, weight and bias (see reference/bucket_tiles.py).
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
