"""SimHash codes in one kernel: rows x hyperplanes -> sign bits -> one packed int32 per table.

Twin: reference/simhash.py simhash_codes_ref (see there for the MIPS transform). For a tile of
BLOCK_M rows and BLOCK_T tables the kernel computes the (BLOCK_M, BLOCK_T * K_PAD) projections
with tl.dot over d in BLOCK_D steps, adds the bias coordinate (a per-row bias for keys, one
scalar for queries) and the MIPS coordinate sqrt(max(M^2 - |x|^2 - b^2, 0)) from the running
|x|^2, and packs bit k of table l as [proj > 0] << k. The float projections never leave
registers: the only store is (M, L) int32.

Precision: x is upcast to fp32 and the dot runs with input_precision="ieee" (no tf32), so the
codes agree with the fp32 twin except where a projection is within rounding of zero. That is
also what keeps the interpreter exact (its bf16 tl.dot is wrong; nothing here is bf16).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _utils


@triton.jit
def _simhash_tile(
    x_ptr,
    stride_xm,
    stride_xd,
    rows,
    row_mask,
    d,
    planes_ptr,
    stride_pl,
    stride_pk,
    stride_pd,
    L,
    K,
    t0,
    bias_ptr,
    stride_b,
    bias_value,
    max_norm_ptr,
    BIAS_MODE: tl.constexpr,
    MIPS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_T: tl.constexpr,
    K_PAD: tl.constexpr,
):
    """(BLOCK_M, BLOCK_T) int32 codes of `rows` for tables t0 .. t0 + BLOCK_T - 1.

    BIAS_MODE: 0 no bias coordinate, 1 the scalar bias_value for every row, 2 per-row bias
    loaded from bias_ptr (which also enters |x|^2 of the MIPS coordinate). MIPS: add the
    coordinate sqrt(max_norm^2 - |x|^2) on plane column d + 1.
    """
    cols = tl.arange(0, BLOCK_T * K_PAD)
    tab = t0 + cols // K_PAD
    bit = cols % K_PAD
    col_ok = (tab < L) & (bit < K)
    p_base = planes_ptr + tab.to(tl.int64) * stride_pl + bit.to(tl.int64) * stride_pk
    x_base = x_ptr + rows.to(tl.int64) * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_T * K_PAD), dtype=tl.float32)
    sq = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for d0 in range(0, d, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        d_ok = dd < d
        xt = tl.load(
            x_base[:, None] + dd[None, :] * stride_xd,
            mask=row_mask[:, None] & d_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        pt = tl.load(
            p_base[None, :] + dd[:, None] * stride_pd,
            mask=d_ok[:, None] & col_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        acc = tl.dot(xt, pt, acc, input_precision="ieee")
        if MIPS:
            sq += tl.sum(xt * xt, axis=1)
    if BIAS_MODE == 2:
        b = tl.load(bias_ptr + rows.to(tl.int64) * stride_b, mask=row_mask, other=0.0)
        b = b.to(tl.float32)
        p_bias = tl.load(p_base + d * stride_pd, mask=col_ok, other=0.0).to(tl.float32)
        acc += b[:, None] * p_bias[None, :]
        sq += b * b
    elif BIAS_MODE == 1:
        p_bias = tl.load(p_base + d * stride_pd, mask=col_ok, other=0.0).to(tl.float32)
        acc += bias_value * p_bias[None, :]
    if MIPS:
        mn = tl.load(max_norm_ptr).to(tl.float32)
        extra = tl.sqrt(tl.maximum(mn * mn - sq, 0.0))
        p_mips = tl.load(p_base + (d + 1) * stride_pd, mask=col_ok, other=0.0).to(tl.float32)
        acc += extra[:, None] * p_mips[None, :]
    bits = tl.where((acc > 0) & col_ok[None, :], 1, 0).to(tl.int32) << bit[None, :]
    return tl.sum(tl.reshape(bits, (BLOCK_M, BLOCK_T, K_PAD)), axis=2)


# Spill-free on sm_90a in bf16 on triton 3.6 and 3.9 at BLOCK_T * K_PAD = 128 columns
# (scripts/check_sm90.py); every BLOCK_D = 64 config tried spilled 0.4-4.5 KB, and 64 x 32 at
# 4 warps spilled 92 bytes on 3.6, so they are not offered.
@triton.autotune(
    configs=_utils.configs(
        [
            triton.Config({"BLOCK_M": 64, "BLOCK_D": 32}, num_warps=8),
            triton.Config({"BLOCK_M": 128, "BLOCK_D": 32}, num_warps=8),
            triton.Config({"BLOCK_M": 32, "BLOCK_D": 32}, num_warps=8),
            triton.Config({"BLOCK_M": 16, "BLOCK_D": 32}, num_warps=4),
        ]
    ),
    key=["d", "BLOCK_T", "K_PAD"],
)
@triton.jit
def simhash_codes_kernel(
    x_ptr,
    planes_ptr,
    bias_ptr,
    max_norm_ptr,
    codes_ptr,
    M,
    d,
    L,
    K,
    bias_value,
    stride_xm,
    stride_xd,
    stride_pl,
    stride_pk,
    stride_pd,
    stride_b,
    stride_cm,
    stride_cl,
    BIAS_MODE: tl.constexpr,
    MIPS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_T: tl.constexpr,
    K_PAD: tl.constexpr,
):
    # 1-D grid, table blocks fastest: the programs of one row block run together and share x
    # through L2 (and a 1-D grid has no 65535 limit on the number of row blocks)
    pid = tl.program_id(0)
    num_tb = tl.cdiv(L, BLOCK_T)
    t0 = (pid % num_tb) * BLOCK_T
    rows = (pid // num_tb).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    codes = _simhash_tile(
        x_ptr,
        stride_xm,
        stride_xd,
        rows,
        row_mask,
        d,
        planes_ptr,
        stride_pl,
        stride_pk,
        stride_pd,
        L,
        K,
        t0,
        bias_ptr,
        stride_b,
        bias_value,
        max_norm_ptr,
        BIAS_MODE,
        MIPS,
        BLOCK_M,
        BLOCK_D,
        BLOCK_T,
        K_PAD,
    )
    tabs = t0 + tl.arange(0, BLOCK_T)
    ptrs = codes_ptr + rows[:, None] * stride_cm + tabs[None, :] * stride_cl
    tl.store(ptrs, codes, mask=row_mask[:, None] & (tabs < L)[None, :])


def hash_args(x, hyperplanes, bias, max_norm):
    """Validated kernel arguments shared with the fused query kernel (bucket_lookup.py):
    (planes, bias_t, bias_value, bias_mode, max_norm_t, stride_b)."""
    _utils.check_float("x", x)
    if x.dim() != 2 or hyperplanes.dim() != 3:
        raise ValueError(
            f"x must be (M, d) and hyperplanes (L, K, d + 2), got "
            f"{tuple(x.shape)} and {tuple(hyperplanes.shape)}"
        )
    L, K, D2 = hyperplanes.shape
    if D2 != x.shape[1] + 2:
        raise ValueError(f"hyperplanes have {D2} coordinates, expected d + 2 = {x.shape[1] + 2}")
    if not 1 <= K <= 31:
        raise ValueError(f"K={K} bits do not pack into an int32 code")
    _utils.check_device("hyperplanes", hyperplanes, x.device)
    planes = hyperplanes if hyperplanes.dtype == torch.float32 else hyperplanes.float()
    dummy = planes  # any tensor on the device for unused pointer arguments
    if isinstance(bias, torch.Tensor):
        if bias.shape != (x.shape[0],):
            raise ValueError(f"bias must be ({x.shape[0]},), got {tuple(bias.shape)}")
        _utils.check_device("bias", bias, x.device)
        bias_t, bias_value, bias_mode, stride_b = bias, 0.0, 2, bias.stride(0)
    elif bias:
        bias_t, bias_value, bias_mode, stride_b = dummy, float(bias), 1, 0
    else:
        bias_t, bias_value, bias_mode, stride_b = dummy, 0.0, 0, 0
    if max_norm is None:
        max_norm_t = dummy
    else:
        max_norm_t = torch.as_tensor(max_norm, dtype=torch.float32, device=x.device).reshape(1)
    return planes, bias_t, bias_value, bias_mode, max_norm_t, stride_b


def simhash_codes(x, hyperplanes, bias=None, max_norm=None):
    """Packed SimHash codes (M, L) int32; same contract as simhash_codes_ref.

    x: (M, d) float (any strides; fp64 is hashed in fp32, as the twin does);
    hyperplanes: (L, K, d + 2); bias: (M,) tensor, a float, or None; max_norm: 0-d tensor,
    float, or None (queries).
    """
    planes, bias_t, bias_value, bias_mode, max_norm_t, stride_b = hash_args(
        x, hyperplanes, bias, max_norm
    )
    M, d = x.shape
    L, K, _ = planes.shape
    codes = _utils.empty((M, L), torch.int32, x.device)
    if M == 0:
        return codes
    K_PAD = _utils.next_pow2(K)
    # tables per program: a dot N-dimension of 16 .. 128 columns
    BLOCK_T = max(min(_utils.next_pow2(L), max(1, 128 // K_PAD)), max(1, 16 // K_PAD))

    def grid(meta):
        return (triton.cdiv(L, BLOCK_T) * triton.cdiv(M, meta["BLOCK_M"]),)

    simhash_codes_kernel[grid](
        x,
        planes,
        bias_t,
        max_norm_t,
        codes,
        M,
        d,
        L,
        K,
        bias_value,
        x.stride(0),
        x.stride(1),
        planes.stride(0),
        planes.stride(1),
        planes.stride(2),
        stride_b,
        codes.stride(0),
        codes.stride(1),
        BIAS_MODE=bias_mode,
        MIPS=max_norm is not None,
        BLOCK_T=BLOCK_T,
        K_PAD=K_PAD,
    )
    return codes
