"""Sampled logits: the estimator's forward, and its backward (coefficients and dh), fused.

Twins: sampled_logits_fwd_ref, sampled_logits_coef_ref and grad_hidden_ref (see
reference/sampled_logits.py for the math). One program per example i holds h_i (BLOCK_D >= d,
fp32) in registers and walks its M candidates BLOCK_C at a time, gathering the candidate rows of W
straight into a (BLOCK_C, BLOCK_D) register tile:

  forward   z = W_c . h (+ b_c), online log-sum-exp of z + log w; loss = lse - z_y.
            Padding (log w = -inf) is masked out of the gather, so it costs no bytes.
  backward  recompute z from the same gather, p = g exp(z + log w - lse), store the
            coefficients and ids (for the dW scatter), and accumulate dh = sum p W_c - g W_y
            from the tile already in registers: W's candidate rows are read once per pass.
  grad_hidden  dh from given (coef, ids): the standalone twin of the fused dh.

The gathered (N, M, d) rows are never materialised. Each pass is a gather GEMV (memory
bound: ~M d bytes per example), so there is no tl.dot here and bf16/fp16 inputs are upcast
to fp32 on load; all sums are fp32. Duplicate candidates are summed like the twin; all
indices are int64 (row * stride can pass 2^31). The kernels accumulate in fp32 only: the
launchers reject fp64 inputs, which ops.py routes to the twins.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _utils

_TILE = 16384  # max BLOCK_C * BLOCK_D elements of the gathered tile held in registers

_CONFIGS = _utils.configs(
    [
        triton.Config({"BLOCK_C": 16}, num_warps=4),
        triton.Config({"BLOCK_C": 8}, num_warps=4),
        triton.Config({"BLOCK_C": 32}, num_warps=4),
        triton.Config({"BLOCK_C": 32}, num_warps=8),
        triton.Config({"BLOCK_C": 64}, num_warps=8),
    ]
)
_PRUNE = {"early_config_prune": _utils.prune_by_tile(_TILE, "BLOCK_C", "BLOCK_D")}


@triton.jit
def _load_vec(ptr, i, stride_n, dd, d_ok, stride_d):
    """Row i of a (rows, d) tensor as a fp32 (BLOCK_D,) vector, 0 past d."""
    return tl.load(ptr + i * stride_n + dd * stride_d, mask=d_ok, other=0.0).to(tl.float32)


@triton.jit
def _gather_rows(w_ptr, ids, ok, dd, d_ok, stride_wn, stride_wd):
    """W[ids] as a fp32 (BLOCK_C, BLOCK_D) tile; rows not `ok` are 0 and read no bytes."""
    return tl.load(
        w_ptr + ids[:, None] * stride_wn + dd[None, :] * stride_wd,
        mask=ok[:, None] & d_ok[None, :],
        other=0.0,
    ).to(tl.float32)


@triton.jit
def _load_candidates(
    logw_ptr,
    ids_ptr,
    i,
    cc,
    c_ok,
    stride_ln,
    stride_lc,
    stride_in,
    stride_ic,
    ALL_IDS: tl.constexpr,
):
    """(log w, live, ids int64) of candidates cc of example i; live = in range and not padding.

    ids are read where live, or wherever in range with ALL_IDS (the backward stores them all).
    """
    logw_ptrs = logw_ptr + i * stride_ln + cc * stride_lc
    logw = tl.load(logw_ptrs, mask=c_ok, other=float("-inf")).to(tl.float32)
    live = c_ok & (logw != float("-inf"))
    ids_mask = live
    if ALL_IDS:
        ids_mask = c_ok
    ids = tl.load(ids_ptr + i * stride_in + cc * stride_ic, mask=ids_mask, other=0).to(tl.int64)
    return logw, live, ids


@triton.jit
def _candidate_logits(
    h, w_ptr, b_ptr, ids, live, dd, d_ok, stride_wn, stride_wd, stride_b, HAS_BIAS: tl.constexpr
):
    """(W tile, z): the live candidate rows gathered and z = W_c . h (+ b_c), 0 for padding."""
    w = _gather_rows(w_ptr, ids, live, dd, d_ok, stride_wn, stride_wd)
    z = tl.sum(w * h[None, :], axis=1)
    if HAS_BIAS:
        z += tl.load(b_ptr + ids * stride_b, mask=live, other=0.0).to(tl.float32)
    return w, z


@triton.autotune(configs=_CONFIGS, key=["d", "M"], prune_configs_by=_PRUNE)
@triton.jit
def sampled_logits_fwd_kernel(
    h_ptr,
    w_ptr,
    b_ptr,
    ids_ptr,
    logw_ptr,
    tgt_ptr,
    loss_ptr,
    lse_ptr,
    M,
    d,
    stride_hn,
    stride_hd,
    stride_wn,
    stride_wd,
    stride_b,
    stride_in,
    stride_ic,
    stride_ln,
    stride_lc,
    stride_t,
    HAS_BIAS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    dd = tl.arange(0, BLOCK_D)
    d_ok = dd < d
    h = _load_vec(h_ptr, i, stride_hn, dd, d_ok, stride_hd)
    y = tl.load(tgt_ptr + i * stride_t).to(tl.int64)
    w_y = _load_vec(w_ptr, y, stride_wn, dd, d_ok, stride_wd)
    z_y = tl.sum(w_y * h, axis=0)
    if HAS_BIAS:
        z_y += tl.load(b_ptr + y * stride_b).to(tl.float32)
    m = tl.full((), float("-inf"), tl.float32)
    s = tl.zeros((), tl.float32)
    # the target's logit as the lse sums it (its candidate slot), so a confident row's loss
    # is exactly 0 even for logits near 1e30; z_y above where the target is no candidate
    z_y_cand = tl.full((), float("-inf"), tl.float32)
    hits = tl.zeros((), tl.int32)
    for c0 in range(0, M, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        c_ok = cc < M
        logw, live, ids = _load_candidates(
            logw_ptr, ids_ptr, i, cc, c_ok, stride_ln, stride_lc, stride_in, stride_ic, False
        )
        _, z = _candidate_logits(
            h, w_ptr, b_ptr, ids, live, dd, d_ok, stride_wn, stride_wd, stride_b, HAS_BIAS
        )
        hit = live & (ids == y)
        z_y_cand = tl.maximum(z_y_cand, tl.max(tl.where(hit, z, float("-inf")), axis=0))
        hits += tl.sum(hit.to(tl.int32), axis=0)
        zl = tl.where(live, z + logw, float("-inf"))
        m_new = tl.maximum(m, tl.max(zl, axis=0))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # all -inf so far: no rescale
        s = s * tl.exp(m - m_ref) + tl.sum(tl.exp(zl - m_ref), axis=0)
        m = m_new
    lse = m + tl.log(s)  # -inf for a row of padding only, as torch.logsumexp
    z_y = tl.where(hits > 0, z_y_cand, z_y)
    tl.store(lse_ptr + i, lse)
    # NaN where lse = +inf (a +inf logit), as torch's log_softmax and the twin
    tl.store(loss_ptr + i, tl.where(lse == float("inf"), float("nan"), lse - z_y))


def _check(hidden, weight, bias, cand_ids, cand_logw, target):
    _utils.check_hidden_weight(hidden, weight)
    N = hidden.shape[0]
    if cand_ids.dim() != 2 or cand_ids.shape[0] != N or cand_logw.shape != cand_ids.shape:
        raise ValueError(
            f"cand_ids and cand_logw must both be ({N}, M), got "
            f"{tuple(cand_ids.shape)} and {tuple(cand_logw.shape)}"
        )
    if target.shape != (N,):
        raise ValueError(f"target must be ({N},), got {tuple(target.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    _utils.check_devices(
        hidden.device,
        weight=weight,
        cand_ids=cand_ids,
        cand_logw=cand_logw,
        target=target,
        bias=bias,
    )


def sampled_logits_fwd(hidden, weight, bias, cand_ids, cand_logw, target):
    """(loss (N,), lse (N,)) fp32; same contract as the twin sampled_logits_fwd_ref."""
    _check(hidden, weight, bias, cand_ids, cand_logw, target)
    _utils.check_kernel_floats("sampled_logits_fwd", hidden=hidden, weight=weight)
    (N, d), M = hidden.shape, cand_ids.shape[1]
    loss = _utils.empty((N,), torch.float32, hidden.device)
    lse = _utils.empty((N,), torch.float32, hidden.device)
    if N == 0:
        return loss, lse
    b = bias if bias is not None else hidden
    sampled_logits_fwd_kernel[(N,)](
        hidden,
        weight,
        b,
        cand_ids,
        cand_logw,
        target,
        loss,
        lse,
        M,
        d,
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        b.stride(0) if bias is not None else 0,
        cand_ids.stride(0),
        cand_ids.stride(1),
        cand_logw.stride(0),
        cand_logw.stride(1),
        target.stride(0),
        HAS_BIAS=bias is not None,
        BLOCK_D=_utils.next_pow2(d),
    )
    return loss, lse


@triton.autotune(configs=_CONFIGS, key=["d", "M", "COMPUTE_DH"], prune_configs_by=_PRUNE)
@triton.jit
def sampled_logits_bwd_kernel(
    g_ptr,
    h_ptr,
    w_ptr,
    b_ptr,
    ids_ptr,
    logw_ptr,
    tgt_ptr,
    lse_ptr,
    coef_ptr,
    ids_out_ptr,
    dh_ptr,
    M,
    d,
    stride_g,
    stride_hn,
    stride_hd,
    stride_wn,
    stride_wd,
    stride_b,
    stride_in,
    stride_ic,
    stride_ln,
    stride_lc,
    stride_t,
    stride_lse,
    stride_cn,
    stride_on,
    stride_dn,
    HAS_BIAS: tl.constexpr,
    COMPUTE_DH: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    dd = tl.arange(0, BLOCK_D)
    d_ok = dd < d
    g = tl.load(g_ptr + i * stride_g).to(tl.float32)
    lse = tl.load(lse_ptr + i * stride_lse).to(tl.float32)
    h = _load_vec(h_ptr, i, stride_hn, dd, d_ok, stride_hd)
    dh = tl.zeros((BLOCK_D,), tl.float32)
    for c0 in range(0, M, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        c_ok = cc < M
        logw, live, ids = _load_candidates(
            logw_ptr, ids_ptr, i, cc, c_ok, stride_ln, stride_lc, stride_in, stride_ic, True
        )
        w, z = _candidate_logits(
            h, w_ptr, b_ptr, ids, live, dd, d_ok, stride_wn, stride_wd, stride_b, HAS_BIAS
        )
        # exactly the twin's g * exp(z + log w - lse): 0 for padding, NaN where lse = -inf
        p = g * tl.exp(z + logw - lse)
        tl.store(coef_ptr + i * stride_cn + cc, p, mask=c_ok)
        tl.store(ids_out_ptr + i * stride_on + cc, ids, mask=c_ok)
        if COMPUTE_DH:
            dh += tl.sum(tl.where(c_ok[:, None], p[:, None] * w, 0.0), axis=0)
    y = tl.load(tgt_ptr + i * stride_t).to(tl.int64)
    tl.store(coef_ptr + i * stride_cn + M, -g)
    tl.store(ids_out_ptr + i * stride_on + M, y)
    if COMPUTE_DH:
        dh -= g * _load_vec(w_ptr, y, stride_wn, dd, d_ok, stride_wd)
        tl.store(dh_ptr + i * stride_dn + dd, dh, mask=d_ok)


def sampled_logits_bwd(
    grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse, compute_dh=True
):
    """(coef (N, M+1) fp32, ids (N, M+1) int64, dh (N, d) fp32 or None) in one pass.

    Same coefficients and ids as the twin sampled_logits_coef_ref, and dh as
    grad_hidden_ref(coef, ids, weight); grad_loss (N,), lse (N,) from the forward.
    """
    _check(hidden, weight, bias, cand_ids, cand_logw, target)
    (N, d), M = hidden.shape, cand_ids.shape[1]
    if grad_loss.shape != (N,) or lse.shape != (N,):
        raise ValueError(f"grad_loss and lse must be ({N},)")
    _utils.check_kernel_floats("sampled_logits_bwd", hidden=hidden, weight=weight, lse=lse)
    dev = hidden.device
    coef = _utils.empty((N, M + 1), torch.float32, dev)
    ids_out = _utils.empty((N, M + 1), torch.int64, dev)
    dh = _utils.empty((N, d), torch.float32, dev) if compute_dh else None
    if N == 0:
        return coef, ids_out, dh
    b = bias if bias is not None else hidden
    dh_arg = dh if compute_dh else coef
    sampled_logits_bwd_kernel[(N,)](
        grad_loss,
        hidden,
        weight,
        b,
        cand_ids,
        cand_logw,
        target,
        lse,
        coef,
        ids_out,
        dh_arg,
        M,
        d,
        grad_loss.stride(0),
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        b.stride(0) if bias is not None else 0,
        cand_ids.stride(0),
        cand_ids.stride(1),
        cand_logw.stride(0),
        cand_logw.stride(1),
        target.stride(0),
        lse.stride(0),
        coef.stride(0),
        ids_out.stride(0),
        dh_arg.stride(0),
        HAS_BIAS=bias is not None,
        COMPUTE_DH=compute_dh,
        BLOCK_D=_utils.next_pow2(d),
    )
    return coef, ids_out, dh


def sampled_logits_coef(grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse):
    """Same contract as the twin sampled_logits_coef_ref (the backward without dh)."""
    coef, ids, _ = sampled_logits_bwd(
        grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse, compute_dh=False
    )
    return coef, ids


@triton.autotune(configs=_CONFIGS, key=["d", "M1"], prune_configs_by=_PRUNE)
@triton.jit
def grad_hidden_kernel(
    coef_ptr,
    ids_ptr,
    w_ptr,
    dh_ptr,
    M1,
    d,
    stride_cn,
    stride_cc,
    stride_in,
    stride_ic,
    stride_wn,
    stride_wd,
    stride_dn,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    dd = tl.arange(0, BLOCK_D)
    d_ok = dd < d
    dh = tl.zeros((BLOCK_D,), tl.float32)
    for c0 in range(0, M1, BLOCK_C):
        cc = c0 + tl.arange(0, BLOCK_C)
        c_ok = cc < M1
        c = tl.load(coef_ptr + i * stride_cn + cc * stride_cc, mask=c_ok, other=0.0)
        ids = tl.load(ids_ptr + i * stride_in + cc * stride_ic, mask=c_ok, other=0).to(tl.int64)
        w = _gather_rows(w_ptr, ids, c_ok, dd, d_ok, stride_wn, stride_wd)
        dh += tl.sum(c.to(tl.float32)[:, None] * w, axis=0)
    tl.store(dh_ptr + i * stride_dn + dd, dh, mask=d_ok)


def grad_hidden(coef, ids, weight):
    """dh (N, d) fp32 = sum_j coef_ij W_{ids_ij}; same contract as the twin grad_hidden_ref."""
    _utils.check_float("weight", weight)
    if coef.dim() != 2 or ids.shape != coef.shape or weight.dim() != 2:
        raise ValueError("coef and ids must be (N, M+1) and weight (n, d)")
    _utils.check_device("ids", ids, coef.device)
    _utils.check_device("weight", weight, coef.device)
    _utils.check_kernel_floats("grad_hidden", coef=coef, weight=weight)
    (N, M1), d = coef.shape, weight.shape[1]
    dh = _utils.empty((N, d), torch.float32, coef.device)
    if N == 0:
        return dh
    grad_hidden_kernel[(N,)](
        coef,
        ids,
        weight,
        dh,
        M1,
        d,
        coef.stride(0),
        coef.stride(1),
        ids.stride(0),
        ids.stride(1),
        weight.stride(0),
        weight.stride(1),
        dh.stride(0),
        BLOCK_D=_utils.next_pow2(d),
    )
    return dh
