"""The exact `full` path as chunked GEMMs: an LSE pass, then per class chunk a Triton GEMM whose
epilogue writes dz, and two cuBLAS products for dW and dh. The CUDA default for method="full".

    z_ij   = h_i . W_j + b_j
    lse_i  = log sum_j exp(z_ij)
    loss_i = lse_i - (1 - eps) z_{i,y_i} - eps/n sum_j z_ij                  (eps: smoothing)
    dz_ij  = g_i softmax_ij - t_i ((1 - eps) 1[j = y_i] + eps/n)
             (g = grad of loss_i; t = g, or the target terms' own gradient under z-loss)

Forward (`linear_ce_lse_kernel`): a GEMM-shaped grid of (row block, class split) programs in
grouped order (GROUP_M row blocks share each split's W tiles while those sit in L2). A program
walks its split's class tiles with a running max and sum of exponentials and writes one
partial lse per row; the launcher reduces the partials with torch.logsumexp afterwards, so the
result does not depend on the order programs finish. The target logit is written by the one
program whose split holds the target (a single writer, no atomics), taken from the same tile
values the lse sums, so a confident row's loss is exactly 0 as torch's is.

Backward, per chunk of C classes (a few thousand; dz (N, C) in the input dtype is the only
working buffer): `linear_ce_dz_kernel` recomputes the chunk's logits tile by tile (grouped
order again) and its epilogue stores dz, cast once, in the input dtype (fp32 for fp32). Then
    dW[chunk] = dz^T h          torch.mm into dW's rows, in the weight's dtype, written once
    dh       += dz W[chunk]     torch.mm with an fp32 result (cuBLAS accumulates in fp32),
                                added into an fp32 dh
    db[chunk] = sum_i dz_i      column sums of dz, in fp32
No atomics anywhere and every sum in a fixed order: two runs are bitwise equal. The logits
are computed twice in all (forward and backward), and every product is a dense GEMM that
cuBLAS or a plain Triton tile loop runs near peak: this replaces the fused kernel of
linear_ce.py, whose atomic dW/dh partial sums move ~240x the bytes of the real inputs and
gradients (DESIGN.md, "The exact path on a GPU"). That kernel stays available
(ops.EXACT_KERNEL_ENV = "fused") until a GPU run says where, if anywhere, it is faster.

The interpreter (TRITON_INTERPRET=1) computes tl.dot on bf16 operands wrongly, so there the
dots run on fp32-upcast operands (_dot_setup); dz is still stored in the input dtype, and on
CPU tensors the dh product runs on fp32 copies of dz and the chunk of W (exact products of
bf16/fp16 values summed in fp32, as cuBLAS's fp32 accumulation does).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import _utils
from .linear_ce import _check, _dot_setup, _logits_tile, _n_bucket

# Forward class splits are multiples of this many columns (a multiple of every BLOCK_N).
_SPLIT_ALIGN = 32 if _utils.INTERPRET else 256
# Forward partials (splits x N fp32) stay under this many bytes: past it, splits widen.
_PARTIAL_BYTES = 64 << 20
# Backward dz buffer (N x C in the input dtype) stays near this many bytes.
_DZ_BYTES = 64 << 20


@triton.jit
def _grouped(pid, num_m, num_n, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of a 1-D grid in grouped order: GROUP_M row blocks sweep each column
    block before the next, so the programs in flight share a few W tiles and h row blocks."""
    in_group = GROUP_M * num_n
    first_m = (pid // in_group) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % in_group) % size_m
    pid_n = (pid % in_group) // size_m
    return pid_m, pid_n


@triton.jit
def linear_ce_lse_kernel(
    h_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    part_lse_ptr,
    part_zsum_ptr,
    zy_ptr,
    N,
    n,
    d,
    n_bucket,
    cols_per_split,
    num_splits,
    stride_hm,
    stride_hd,
    stride_wn,
    stride_wd,
    HAS_BIAS: tl.constexpr,
    SMOOTH: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """Per (row block, class split): partial lse (and logit sum) per row; z_y where y lies."""
    pid_m, pid_s = _grouped(tl.program_id(0), tl.cdiv(N, BLOCK_M), num_splits, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs_m < N
    y = tl.load(y_ptr + offs_m, mask=row_mask, other=-1)
    lo = pid_s * cols_per_split
    hi = tl.minimum(n, lo + cols_per_split)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    s_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    z_y = tl.zeros((BLOCK_M,), dtype=tl.float32)
    z_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        col_mask = offs_n < hi
        z = _logits_tile(
            h_ptr,
            w_ptr,
            b_ptr,
            offs_m,
            offs_n,
            row_mask,
            col_mask,
            d,
            stride_hm,
            stride_hd,
            stride_wn,
            stride_wd,
            HAS_BIAS,
            DOT_DTYPE,
            INPUT_PRECISION,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
        )
        z = tl.where(col_mask[None, :], z, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(z, 1))
        s_i = s_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(z - m_new[:, None]), 1)
        m_i = m_new
        z_y += tl.sum(tl.where(offs_n[None, :] == y[:, None], z, 0.0), 1)
        if SMOOTH:
            z_sum += tl.sum(tl.where(col_mask[None, :], z, 0.0), 1)
    out = pid_s.to(tl.int64) * N + offs_m
    tl.store(part_lse_ptr + out, m_i + tl.log(s_i), mask=row_mask)
    if SMOOTH:
        tl.store(part_zsum_ptr + out, z_sum, mask=row_mask)
    # the splits partition [0, n): exactly one program stores each in-range target's logit
    tl.store(zy_ptr + offs_m, z_y, mask=row_mask & (y >= lo) & (y < hi))


@triton.jit
def linear_ce_dz_kernel(
    g_ptr,
    gt_ptr,
    h_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    lse_ptr,
    dz_ptr,
    N,
    n,
    d,
    n_bucket,
    lo,
    hi,
    stride_hm,
    stride_hd,
    stride_wn,
    stride_wd,
    stride_dzm,
    stride_dzn,
    target_coef,
    smooth_coef,
    HAS_BIAS: tl.constexpr,
    SMOOTH: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """dz[:, j - lo] for classes j in [lo, hi): one logits tile per program, dz in the epilogue."""
    num_n = tl.cdiv(hi - lo, BLOCK_N)
    pid_m, pid_n = _grouped(tl.program_id(0), tl.cdiv(N, BLOCK_M), num_n, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # column within the chunk
    offs_n = lo + offs_c
    row_mask = offs_m < N
    col_mask = offs_n < hi
    g = tl.load(g_ptr + offs_m, mask=row_mask, other=0.0)
    gt = tl.load(gt_ptr + offs_m, mask=row_mask, other=0.0)
    dz = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # Row blocks with no gradient at all (ignored rows, padding) skip the product: dz = 0.
    if tl.sum(((g != 0) | (gt != 0)).to(tl.int32), 0) > 0:
        lse = tl.load(lse_ptr + offs_m, mask=row_mask, other=0.0)
        y = tl.load(y_ptr + offs_m, mask=row_mask, other=-1)
        z = _logits_tile(
            h_ptr,
            w_ptr,
            b_ptr,
            offs_m,
            offs_n,
            row_mask,
            col_mask,
            d,
            stride_hm,
            stride_hd,
            stride_wn,
            stride_wd,
            HAS_BIAS,
            DOT_DTYPE,
            INPUT_PRECISION,
            BLOCK_M,
            BLOCK_N,
            BLOCK_K,
        )
        # `g != 0` guards, not products: an ignored row may hold lse = inf (0 * nan stays 0)
        p = tl.where(g[:, None] != 0, g[:, None] * tl.exp(z - lse[:, None]), 0.0)
        onehot = tl.where(offs_n[None, :] == y[:, None], target_coef, 0.0)
        if SMOOTH:
            onehot += smooth_coef
        dz = p - tl.where(gt[:, None] != 0, gt[:, None] * onehot, 0.0)
    ptrs = dz_ptr + offs_m.to(tl.int64)[:, None] * stride_dzm + offs_c[None, :] * stride_dzn
    tl.store(ptrs, dz.to(dz_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


# ---------------------------------------------------------------------------------------------
# Configs. Both kernels are one GEMM tile loop plus a row-wise epilogue, so they take matmul
# tiles; autotune keyed on (d, n bucket). Under the interpreter one small config.
# ---------------------------------------------------------------------------------------------

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), every BLOCK_N divides _SPLIT_ALIGN.
# ptxas on triton 3.9's sm_90a output (scripts/check_sm90.py, record
# bench/results/check_sm90-triton3.9-linear_ce_chunked-20261207.txt), bf16 with a bias:
# 128x128x64 w8 s4 and 64x256x64 w8 s4 spill nothing in either kernel; 128x256x64 w8 s3
# (Hopper's widest wgmma tile) spills 40 B in the LSE pass and 148 B in the dz kernel, kept
# for the autotuner to weigh; 128x128x64 w4 and 256x128x64 w8 spilled 100-170 B, dropped.
# fp32 (IEEE dots on CUDA cores) spills in every config, as in linear_ce.py (the slow path),
# and 128x256 spills ~40 KB there: fp32 dots keep only tiles up to 128x128 (_prune).
_GEMM_ROWS = [(128, 128, 64, 8, 4), (64, 256, 64, 8, 4), (128, 256, 64, 8, 3)]
_GROUP_M = 8


def _configs():
    rows = [(16, 32, 32, 4, 1)] if _utils.INTERPRET else _GEMM_ROWS
    return [
        triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": _GROUP_M},
            num_warps=w,
            num_stages=s,
        )
        for bm, bn, bk, w, s in rows
    ]


def _prune(configs, named_args, **kwargs):
    """fp32 dots: tiles of at most 128 x 128 (the wider ones spill tens of KB on sm_90a)."""
    if kwargs.get("DOT_DTYPE", named_args.get("DOT_DTYPE")) != tl.float32 or len(configs) < 2:
        return configs
    fit = [c for c in configs if c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= 128 * 128]
    return fit or configs[:1]


_AUTOTUNE = dict(key=["d", "n_bucket"], prune_configs_by={"early_config_prune": _prune})
linear_ce_lse_kernel = triton.autotune(configs=_configs(), **_AUTOTUNE)(linear_ce_lse_kernel)
linear_ce_dz_kernel = triton.autotune(configs=_configs(), **_AUTOTUNE)(linear_ce_dz_kernel)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def class_chunk(N: int, n: int, dtype: torch.dtype) -> int:
    """Classes per backward chunk: dz (N, C) near _DZ_BYTES, a multiple of _SPLIT_ALIGN, at
    least 2 * _SPLIT_ALIGN (the GEMMs stay GEMM-shaped at large N), at most n."""
    size = torch.empty((), dtype=dtype).element_size()
    c = _DZ_BYTES // max(1, N * size)
    c = max(2 * _SPLIT_ALIGN, c // _SPLIT_ALIGN * _SPLIT_ALIGN)
    return min(n, c)


@functools.cache
def _mm_out_dtype_works(device_type: str) -> bool:
    """Whether torch.mm(a, b, out_dtype=float32) runs for bf16 operands here (CUDA, torch >=
    2.8); else dh falls back to a bf16/fp16 chunk product added in fp32 (_mm_fp32)."""
    if device_type != "cuda":
        return False
    a = torch.ones((16, 16), dtype=torch.bfloat16, device="cuda")
    try:
        return torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError, NotImplementedError):
        return False


def _mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b as float32 with fp32 accumulation, for a and b of one dtype.

    fp32: a plain mm. CUDA bf16/fp16: cuBLAS with an fp32 output (no rounding of the
    product to 16 bits), or where torch lacks mm's out_dtype, the 16-bit product upcast (one
    rounding per chunk, then fp32 sums across chunks). CPU (interpreter tests): fp32 copies.
    """
    if a.dtype == torch.float32:
        return a @ b
    if _mm_out_dtype_works(a.device.type):
        return torch.mm(a, b, out_dtype=torch.float32)
    if a.is_cuda:
        return (a @ b).float()
    return a.float() @ b.float()


def _fwd_splits(N: int, n: int, device: torch.device) -> tuple[int, int]:
    """(splits, cols_per_split): one _SPLIT_ALIGN-wide split per program (the GEMM grid),
    widened only when the (splits, N) fp32 partials would pass _PARTIAL_BYTES."""
    splits = triton.cdiv(n, _SPLIT_ALIGN)
    max_splits = max(1, _PARTIAL_BYTES // (4 * max(N, 1) * 2))
    if splits > max_splits:
        splits = max_splits
    cols = triton.cdiv(triton.cdiv(n, splits), _SPLIT_ALIGN) * _SPLIT_ALIGN
    return triton.cdiv(n, cols), cols


def linear_ce_chunked_fwd(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row cross-entropy of hidden @ weight.T (+ bias): (loss (N,), lse (N,)) float32.

    hidden: (N, d) and weight: (n, d) float32/float16/bfloat16, any strides; bias: (n,) or
    None; target: (N,) integer, in [0, n) on rows that count (a row whose target lies outside
    gets z_y = 0: the caller masks ignored rows). Deterministic: partials reduced in order.
    """
    _check("linear_ce_chunked_fwd", hidden, weight, bias, target, label_smoothing)
    N, d = hidden.shape
    n = weight.shape[0]
    dev = hidden.device
    if N == 0:
        empty = torch.empty(0, dtype=torch.float32, device=dev)
        return empty, empty.clone()
    splits, cols = _fwd_splits(N, n, dev)
    smooth = float(label_smoothing) > 0.0
    part = _utils.empty((2 if smooth else 1, splits, N), torch.float32, dev)
    z_y = torch.zeros(N, dtype=torch.float32, device=dev)  # rows with no target in [0, n)
    y = target.to(torch.int64).contiguous()
    b = bias.contiguous() if bias is not None else hidden
    dot_dtype, precision = _dot_setup(hidden, weight)

    def grid(meta):
        return (triton.cdiv(N, meta["BLOCK_M"]) * splits,)

    linear_ce_lse_kernel[grid](
        hidden,
        weight,
        b,
        y,
        part[0],
        part[1] if smooth else part[0],
        z_y,
        N,
        n,
        d,
        _n_bucket(n),
        cols,
        splits,
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        HAS_BIAS=bias is not None,
        SMOOTH=smooth,
        DOT_DTYPE=dot_dtype,
        INPUT_PRECISION=precision,
    )
    lse = torch.logsumexp(part[0], dim=0) if splits > 1 else part[0, 0]
    loss = lse - (1.0 - label_smoothing) * z_y
    if smooth:
        loss = loss - (label_smoothing / n) * part[1].sum(0)
    # NaN where lse = +inf, as torch's log_softmax and the twin give (not +inf)
    return torch.where(lse == float("inf"), torch.full_like(loss, float("nan")), loss), lse


def linear_ce_chunked_bwd(
    grad_loss: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    lse: torch.Tensor,
    label_smoothing: float = 0.0,
    *,
    target_grad: torch.Tensor | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(dh (N, d) float32, dW (n, d) in weight's dtype, db (n,) in bias's dtype or None).

    The gradients of sum_i grad_loss_i * loss_i. grad_loss, lse: (N,) (lse from
    linear_ce_chunked_fwd; rows with grad_loss = 0 get exactly zero). target_grad: (N,), the
    gradient of the one-hot and smoothing terms where it differs from grad_loss's (z-loss
    scales only the softmax part); default grad_loss. chunk: classes per chunk (default
    class_chunk: dz (N, chunk) near 64 MiB). Deterministic: no atomics, fixed sum orders.
    """
    _check("linear_ce_chunked_bwd", hidden, weight, bias, target, label_smoothing)
    N, d = hidden.shape
    n = weight.shape[0]
    dev = hidden.device
    for name, t in (("grad_loss", grad_loss), ("lse", lse), ("target_grad", target_grad)):
        if t is not None and t.shape != (N,):
            raise ValueError(f"{name} must be (N={N},), got {tuple(t.shape)}")
    if chunk is not None and int(chunk) < 1:
        raise ValueError(f"chunk must be a positive number of classes, got {chunk!r}")
    # the dtype dz and the cuBLAS products run in: the inputs' when they agree, else fp32
    ct = hidden.dtype if hidden.dtype == weight.dtype else torch.float32
    dh = torch.zeros((N, d), dtype=torch.float32, device=dev)
    dW = _utils.empty((n, d), weight.dtype, dev)
    db = _utils.empty((n,), bias.dtype, dev) if bias is not None else None
    if N == 0:
        dW.zero_()
        if db is not None:
            db.zero_()
        return dh, dW, db
    g = grad_loss.to(torch.float32).contiguous()
    gt = g if target_grad is None else target_grad.to(torch.float32).contiguous()
    lse = lse.to(torch.float32).contiguous()
    y = target.to(torch.int64).contiguous()
    b = bias.contiguous() if bias is not None else hidden
    h_mm = hidden.to(ct)  # no copy when hidden is already ct; torch.mm takes any strides
    dot_dtype, precision = _dot_setup(hidden, weight)
    C = min(n, int(chunk)) if chunk is not None else class_chunk(N, n, ct)
    dz_buf = _utils.empty((N, C), ct, dev)
    eps = float(label_smoothing)
    for lo in range(0, n, C):
        hi = min(n, lo + C)
        dz = dz_buf[:, : hi - lo]

        def grid(meta, width=hi - lo):
            return (triton.cdiv(N, meta["BLOCK_M"]) * triton.cdiv(width, meta["BLOCK_N"]),)

        linear_ce_dz_kernel[grid](
            g,
            gt,
            hidden,
            weight,
            b,
            y,
            lse,
            dz,
            N,
            n,
            d,
            _n_bucket(n),
            lo,
            hi,
            hidden.stride(0),
            hidden.stride(1),
            weight.stride(0),
            weight.stride(1),
            dz.stride(0),
            dz.stride(1),
            1.0 - eps,
            eps / n,
            HAS_BIAS=bias is not None,
            SMOOTH=eps > 0.0,
            DOT_DTYPE=dot_dtype,
            INPUT_PRECISION=precision,
        )
        w_mm = weight[lo:hi].to(ct)
        if weight.dtype == ct:
            torch.mm(dz.T, h_mm, out=dW[lo:hi])
        else:
            dW[lo:hi] = (dz.T @ h_mm).to(weight.dtype)
        dh += _mm_fp32(dz, w_mm)
        if db is not None:
            db[lo:hi] = dz.sum(0, dtype=torch.float32).to(bias.dtype)
    return dh, dW, db
