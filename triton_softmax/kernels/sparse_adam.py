"""Fused sparse Adam row update: one pass over the rows a coalesced sparse gradient touches.

Twin: reference.sparse_adam.sparse_adam_update_ref (torch.optim.SparseAdam's arithmetic, op
for op). For each touched row r (distinct, from a coalesced gradient) and column c, with
g = values[k, c]:

    m = m + (g - m) (1 - beta1)           v = v + (g^2 - v) (1 - beta2)
    p = p - step_size * m / (sqrt(v) + eps)

one program per (block of BLOCK_R rows, block of BLOCK_D columns): it reads g, p, m, v once
and writes p, m, v once; rows are distinct, so no two programs touch the same element (no
atomics). SparseAdam itself makes about ten passes (sparse_mask twice, three sparse adds,
the temporaries in between) after its own coalesce. Arithmetic in fp32, stored in the
parameter's dtype; sqrt and the division round to nearest (sqrt_rn, div_rn), as torch does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _utils


@triton.autotune(
    configs=_utils.configs(
        [
            triton.Config({"BLOCK_R": 8, "BLOCK_D": 128}, num_warps=4),
            triton.Config({"BLOCK_R": 16, "BLOCK_D": 128}, num_warps=4),
            triton.Config({"BLOCK_R": 4, "BLOCK_D": 256}, num_warps=4),
            triton.Config({"BLOCK_R": 32, "BLOCK_D": 64}, num_warps=8),
        ]
    ),
    key=["D"],
    # the kernel updates p, m, v in place: tuning runs must not apply the step twice
    restore_value=["p_ptr", "m_ptr", "v_ptr"],
)
@triton.jit
def sparse_adam_update_kernel(
    rows_ptr,
    g_ptr,
    p_ptr,
    m_ptr,
    v_ptr,
    U,
    D,
    step_size,
    one_minus_beta1,
    one_minus_beta2,
    eps,
    stride_gu,
    stride_gd,
    stride_pn,
    stride_pd,
    stride_mn,
    stride_md,
    stride_vn,
    stride_vd,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    k = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cc = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    k_ok = k < U
    c_ok = cc < D
    ok = k_ok[:, None] & c_ok[None, :]
    r = tl.load(rows_ptr + k, mask=k_ok, other=0).to(tl.int64)
    g = tl.load(g_ptr + k[:, None] * stride_gu + cc[None, :] * stride_gd, mask=ok, other=0.0)
    g = g.to(tl.float32)
    p_at = p_ptr + r[:, None] * stride_pn + cc[None, :] * stride_pd
    m_at = m_ptr + r[:, None] * stride_mn + cc[None, :] * stride_md
    v_at = v_ptr + r[:, None] * stride_vn + cc[None, :] * stride_vd
    p = tl.load(p_at, mask=ok, other=0.0).to(tl.float32)
    m = tl.load(m_at, mask=ok, other=0.0).to(tl.float32)
    v = tl.load(v_at, mask=ok, other=0.0).to(tl.float32)
    m = m + (g - m) * one_minus_beta1
    v = v + (g * g - v) * one_minus_beta2
    denom = tl.sqrt_rn(v) + eps
    p = p + (-step_size) * tl.div_rn(m, denom)
    tl.store(m_at, m.to(m_ptr.dtype.element_ty), mask=ok)
    tl.store(v_at, v.to(v_ptr.dtype.element_ty), mask=ok)
    tl.store(p_at, p.to(p_ptr.dtype.element_ty), mask=ok)


def sparse_adam_update(
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
    """In place: the Adam update of param/exp_avg/exp_avg_sq rows `rows`; same contract as
    reference.sparse_adam.sparse_adam_update_ref.

    param, exp_avg, exp_avg_sq: (n, D) float, one dtype; rows: (U,) int64, distinct, in
    [0, n); values: (U, D) the gradient rows (a coalesced sparse gradient's values).
    step_size = lr sqrt(1 - beta2^t) / (1 - beta1^t), as SparseAdam computes it.
    """
    for name, t in (("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq), ("values", values)):
        _utils.check_float(name, t)
        _utils.check_device(name, t, param.device)
    _utils.check_device("rows", rows, param.device)
    if param.dim() != 2 or exp_avg.shape != param.shape or exp_avg_sq.shape != param.shape:
        raise ValueError(
            f"param, exp_avg, exp_avg_sq must be one (n, D) shape, got {tuple(param.shape)}, "
            f"{tuple(exp_avg.shape)}, {tuple(exp_avg_sq.shape)}"
        )
    U, D = rows.shape[0], param.shape[1]
    if rows.dim() != 1 or values.shape != (U, D):
        raise ValueError(
            f"rows (U,) and values (U, {D}) expected, got {tuple(rows.shape)}, "
            f"{tuple(values.shape)}"
        )
    if U == 0 or D == 0:
        return

    def grid(meta):
        return (triton.cdiv(U, meta["BLOCK_R"]), triton.cdiv(D, meta["BLOCK_D"]))

    sparse_adam_update_kernel[grid](
        rows,
        values,
        param,
        exp_avg,
        exp_avg_sq,
        U,
        D,
        float(step_size),
        1.0 - beta1,
        1.0 - beta2,
        float(eps),
        values.stride(0),
        values.stride(1),
        param.stride(0),
        param.stride(1),
        exp_avg.stride(0),
        exp_avg.stride(1),
        exp_avg_sq.stride(0),
        exp_avg_sq.stride(1),
    )
