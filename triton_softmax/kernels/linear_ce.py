"""Fused linear + softmax cross-entropy: the exact `full` path, never holding (N, n) logits.

Not the default any more: the exact path runs linear_ce_chunked.py's kernels (an LSE pass,
then per class chunk a GEMM with a dz epilogue and two cuBLAS products, no atomics); these run
under TRITON_SOFTMAX_EXACT_KERNEL=fused (triton_softmax.ops) until a GPU run shows where, if
anywhere, they are faster. Their tile helpers are shared with linear_ce_chunked.py and
bucket_tiles.py.

    z_ij   = h_i . W_j + b_j                       tiles of h @ W^T with tl.dot, fp32 acc
    lse_i  = log sum_j exp(z_ij)                    online max / log-sum-exp over class tiles
    loss_i = lse_i - (1 - eps) z_{i,y_i} - eps/n sum_j z_ij          (eps = label smoothing)
    dz_ij  = g_i (softmax_ij - (1 - eps) 1[j = y_i] - eps/n)         (g = grad of loss_i)
    dh_i   = sum_j dz_ij W_j        dW_j = sum_i dz_ij h_i        db_j = sum_i dz_ij

Forward: grid (row blocks, class splits). A program walks its split's class tiles, keeping a
running max and sum of exponentials per row, the target logit (picked out of the tile it lies
in) and, with label smoothing, the running sum of logits (one more row reduction of the tile
already in registers). Each split writes one partial (lse, z_y, sum z) per row; the launcher
combines the few splits. The splits exist for occupancy: N / BLOCK_M row blocks alone do not
fill a GPU at N = 8192.

Backward: grid (class blocks, row splits). A program owns a block of classes and walks row
blocks: it recomputes the logits tile, forms dz in registers and adds dz^T h into its dW rows
(plain read-add-write when it is the only row split, so no atomics and a fixed order; atomic
adds when the rows are split for occupancy), and db from a register accumulator. dh then comes
one of two ways (`dh_mode`):
  "atomic"   (default) the same program atomically adds dz W_j into dh. One pass, three
             GEMM-sized products per tile, and class blocks x row splits programs in flight.
  "two_pass" a second kernel owns row blocks, recomputes the logits again and accumulates dh
             with plain read-add-write. A fourth GEMM-sized product and only N / BLOCK_M
             programs, but bitwise run-to-run deterministic (with one row split, which this
             mode forces) and free of atomic traffic on dh.
Atomic is the default because it does three GEMM-sized products instead of four and keeps
(n / BLOCK_N) x row splits programs busy where two_pass's dh kernel has only N / BLOCK_M (64
at N = 8192: half an H100); two_pass is there for reproducibility and to measure against.
On GPU the backward's dz tile is cast to the input dtype (bf16/fp16) for its two tensor-core
products, as torch's own bf16 logits gradient is; every sum is accumulated in fp32 and dh, dW,
db come back fp32 like the chunked twin's.

Gradient filtering (Cut Cross-Entropy's trick, `filter_eps`, off by default): a tile whose
unscaled |dz| is below filter_eps everywhere is skipped (no dW/dh/db update), so each skipped
entry errs by less than filter_eps * |grad_loss_i|. A tile holding a target is skipped only
if that target's probability is above 1 - filter_eps. Row blocks whose grad_loss is all zero
(ignored rows) are always skipped: that is exact.

The interpreter (TRITON_INTERPRET=1, CPU tests) computes tl.dot on bf16 operands wrongly in
triton 3.9, so there the launcher sets DOT_DTYPE = fp32 and every dot runs on fp32-upcast
operands (bf16 -> fp32 is exact); on GPU bf16/fp16 dots run natively on tensor cores with fp32
accumulation, and fp32 inputs use IEEE fp32 dots (not TF32), matching torch's default matmul.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import _utils

# Class splits (forward) start at multiples of this, so no class tile straddles two splits:
# it must be a multiple of every config's BLOCK_N.
_SPLIT_ALIGN = 32 if _utils.INTERPRET else 256


# ---------------------------------------------------------------------------------------------
# Tile helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def _logits_tile(
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
    HAS_BIAS: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """z (BLOCK_M, BLOCK_N) fp32 = h[offs_m] @ W[offs_n]^T (+ b[offs_n]); masked rows/cols are 0."""
    offs_k = tl.arange(0, BLOCK_K)
    # Row offsets in int64: offs * stride passes 2^31 once n * d (or N * d) does.
    h_ptrs = h_ptr + offs_m.to(tl.int64)[:, None] * stride_hm + offs_k[None, :] * stride_hd
    w_ptrs = w_ptr + offs_n.to(tl.int64)[None, :] * stride_wn + offs_k[:, None] * stride_wd
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, d, BLOCK_K):
        k_mask = offs_k < d - k
        a = tl.load(h_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        b = tl.load(w_ptrs, mask=k_mask[:, None] & col_mask[None, :], other=0.0)
        acc = tl.dot(a.to(DOT_DTYPE), b.to(DOT_DTYPE), acc, input_precision=INPUT_PRECISION)
        h_ptrs += BLOCK_K * stride_hd
        w_ptrs += BLOCK_K * stride_wd
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def _grad_logits_tile(
    h_ptr,
    w_ptr,
    b_ptr,
    lse,
    y,
    offs_m,
    offs_n,
    row_mask,
    col_mask,
    d,
    stride_hm,
    stride_hd,
    stride_wn,
    stride_wd,
    target_coef,
    smooth_coef,
    HAS_BIAS: tl.constexpr,
    SMOOTH: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Unscaled dz = softmax - (1 - eps) onehot - eps/n for one tile, 0 outside the masks."""
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
    dz = tl.exp(z - lse[:, None])
    if SMOOTH:
        dz = dz - smooth_coef
    dz = tl.where(offs_n[None, :] == y[:, None], dz - target_coef, dz)
    return tl.where(row_mask[:, None] & col_mask[None, :], dz, 0.0)


@triton.jit
def _accumulate(ptrs, val, mask, exclusive):
    """ptrs += val: plain read-add-write when this program owns the rows, else atomic."""
    if exclusive:
        tl.store(ptrs, tl.load(ptrs, mask=mask, other=0.0) + val, mask=mask)
    else:
        tl.atomic_add(ptrs, val, mask=mask, sem="relaxed")


@triton.jit
def _tile_grad_update(
    dzg,
    h_ptr,
    w_ptr,
    dh_ptr,
    dw_ptr,
    offs_m,
    offs_n,
    row_mask,
    col_mask,
    d,
    stride_hm,
    stride_hd,
    stride_wn,
    stride_wd,
    stride_dhm,
    stride_dhd,
    stride_dwn,
    stride_dwd,
    dw_exclusive,
    DO_DW: tl.constexpr,
    DH_MODE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """dW[offs_n] += dzg^T h[offs_m] and dh[offs_m] += dzg W[offs_n], over chunks of d.

    DH_MODE: 0 no dh, 1 atomic dh, 2 exclusive dh (the program owns these rows of dh).
    """
    a = dzg.to(DOT_DTYPE)
    offs_k = tl.arange(0, BLOCK_K)
    # int64 row offsets; the d offset advances in the (64-bit) pointers, as in _logits_tile.
    offs_m64 = offs_m.to(tl.int64)
    offs_n64 = offs_n.to(tl.int64)
    h_ptrs = h_ptr + offs_m64[:, None] * stride_hm + offs_k[None, :] * stride_hd
    w_ptrs = w_ptr + offs_n64[:, None] * stride_wn + offs_k[None, :] * stride_wd
    dw_ptrs = dw_ptr + offs_n64[:, None] * stride_dwn + offs_k[None, :] * stride_dwd
    dh_ptrs = dh_ptr + offs_m64[:, None] * stride_dhm + offs_k[None, :] * stride_dhd
    for k in range(0, d, BLOCK_K):
        k_mask = offs_k < d - k
        if DO_DW:
            hk = tl.load(h_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
            dw_k = tl.dot(tl.trans(a), hk.to(DOT_DTYPE), input_precision=INPUT_PRECISION)
            _accumulate(dw_ptrs, dw_k, col_mask[:, None] & k_mask[None, :], dw_exclusive)
        if DH_MODE != 0:
            wk = tl.load(w_ptrs, mask=col_mask[:, None] & k_mask[None, :], other=0.0)
            dh_k = tl.dot(a, wk.to(DOT_DTYPE), input_precision=INPUT_PRECISION)
            _accumulate(dh_ptrs, dh_k, row_mask[:, None] & k_mask[None, :], DH_MODE == 2)
        h_ptrs += BLOCK_K * stride_hd
        w_ptrs += BLOCK_K * stride_wd
        dw_ptrs += BLOCK_K * stride_dwd
        dh_ptrs += BLOCK_K * stride_dhd


# ---------------------------------------------------------------------------------------------
# Autotune configs, keyed on (d, n bucket). Under the interpreter one small config, so tests
# stay fast and still cross several row, class and d blocks at small sizes.
# ---------------------------------------------------------------------------------------------


def _zero_grads(nargs):
    """Config pre_hook: zero the accumulated outputs before every (benchmark or real) launch.

    A Config pre_hook runs before the final launch on every triton version, unlike the
    autotuner's reset_to_zero, so accumulation never starts from a benchmark's leftovers.
    """
    for name in ("dh_ptr", "dw_ptr", "db_ptr"):
        t = nargs.get(name)
        if isinstance(t, torch.Tensor):
            t.zero_()


def _configs(rows, pre_hook=None):
    return _utils.tile_configs(rows, (16, 32, 32, 4, 1), pre_hook)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); every BLOCK_N divides _SPLIT_ALIGN.
# Chosen so that none spills registers on sm_90a in bf16, with or without a bias (ptxas -v on
# triton 3.9 output: scripts/check_sm90.py). The backward holds a BLOCK_M x BLOCK_N fp32 dz
# tile across its d loop, hence smaller tiles: 128 x 128 x 32 and 256 x 64 x 32 spilled
# 130-460 bytes there. fp32 (IEEE dots on CUDA cores) spills in every row; it is the slow
# path anyway.
_FWD_ROWS = [
    (128, 128, 64, 8, 3),
    (64, 128, 64, 4, 4),
    (128, 128, 32, 8, 4),
    (128, 64, 64, 8, 3),
    (64, 256, 64, 8, 3),
]
_BWD_ROWS = [
    (128, 64, 32, 8, 3),
    (64, 128, 32, 8, 3),
    (64, 64, 64, 8, 3),
    (128, 32, 64, 8, 3),
    (64, 64, 32, 4, 3),
]


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.autotune(configs=_configs(_FWD_ROWS), key=["d", "n_bucket"])
@triton.jit
def linear_ce_fwd_kernel(
    h_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    part_lse_ptr,
    part_zy_ptr,
    part_zsum_ptr,
    N,
    n,
    d,
    n_bucket,
    cols_per_split,
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
):
    """Per (row block, class split): partial lse, target logit and logit sum of each row."""
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs_m < N
    y = tl.load(y_ptr + offs_m, mask=row_mask, other=-1)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    s_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    z_y = tl.zeros((BLOCK_M,), dtype=tl.float32)
    z_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    lo = pid_s * cols_per_split
    hi = tl.minimum(n, lo + cols_per_split)
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
    tl.store(part_zy_ptr + out, z_y, mask=row_mask)
    if SMOOTH:
        tl.store(part_zsum_ptr + out, z_sum, mask=row_mask)


@triton.autotune(configs=_configs(_BWD_ROWS, _zero_grads), key=["d", "n_bucket"])
@triton.jit
def linear_ce_bwd_kernel(
    g_ptr,
    h_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    lse_ptr,
    dh_ptr,
    dw_ptr,
    db_ptr,
    N,
    n,
    d,
    n_bucket,
    stride_hm,
    stride_hd,
    stride_wn,
    stride_wd,
    stride_dhm,
    stride_dhd,
    stride_dwn,
    stride_dwd,
    target_coef,
    smooth_coef,
    filter_eps,
    HAS_BIAS: tl.constexpr,
    SMOOTH: tl.constexpr,
    FILTER: tl.constexpr,
    DH_ATOMIC: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Per (class block, row split): dW and db of its classes, and dh by atomics if DH_ATOMIC."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    m_split = tl.num_programs(1)
    # One row split: this program alone writes these dW rows, in a fixed order.
    exclusive = m_split == 1
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = offs_n < n
    db_acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    num_m = tl.cdiv(N, BLOCK_M)
    # Programs in flight walk the row blocks in step; staggering the start by groups of 8
    # class blocks keeps 8, not all, of them adding into the same dh rows at once, while the
    # dh rows being hit stay few enough to sit in L2. (Any fixed order keeps dW deterministic.)
    start = pid_n // 8
    for t in range(pid_s, num_m, m_split):
        mb = (t + start) % num_m
        offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = offs_m < N
        g = tl.load(g_ptr + offs_m, mask=row_mask, other=0.0)
        # Row blocks with no gradient (ignored rows, padding) cost nothing. `!= 0` keeps NaN.
        if tl.sum((g != 0).to(tl.int32), 0) > 0:
            lse = tl.load(lse_ptr + offs_m, mask=row_mask, other=0.0)
            y = tl.load(y_ptr + offs_m, mask=row_mask, other=-1)
            dz = _grad_logits_tile(
                h_ptr,
                w_ptr,
                b_ptr,
                lse,
                y,
                offs_m,
                offs_n,
                row_mask,
                col_mask,
                d,
                stride_hm,
                stride_hd,
                stride_wn,
                stride_wd,
                target_coef,
                smooth_coef,
                HAS_BIAS,
                SMOOTH,
                DOT_DTYPE,
                INPUT_PRECISION,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
            )
            keep = True
            if FILTER:
                keep = tl.max(tl.max(tl.abs(dz), 1), 0) >= filter_eps
            if keep:
                dzg = tl.where(g[:, None] != 0, dz * g[:, None], 0.0)
                if HAS_BIAS:
                    db_acc += tl.sum(dzg, 0)
                _tile_grad_update(
                    dzg,
                    h_ptr,
                    w_ptr,
                    dh_ptr,
                    dw_ptr,
                    offs_m,
                    offs_n,
                    row_mask,
                    col_mask,
                    d,
                    stride_hm,
                    stride_hd,
                    stride_wn,
                    stride_wd,
                    stride_dhm,
                    stride_dhd,
                    stride_dwn,
                    stride_dwd,
                    exclusive,
                    True,
                    1 if DH_ATOMIC else 0,
                    DOT_DTYPE,
                    INPUT_PRECISION,
                    BLOCK_M,
                    BLOCK_N,
                    BLOCK_K,
                )
                # The next row block re-reads these dW rows: make this one's writes visible
                # to every thread of the program (a no-op under the interpreter).
                tl.debug_barrier()
    if HAS_BIAS:
        _accumulate(db_ptr + offs_n, db_acc, col_mask, exclusive)


@triton.autotune(configs=_configs(_BWD_ROWS, _zero_grads), key=["d", "n_bucket"])
@triton.jit
def linear_ce_bwd_dh_kernel(
    g_ptr,
    h_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    lse_ptr,
    dh_ptr,
    N,
    n,
    d,
    n_bucket,
    stride_hm,
    stride_hd,
    stride_wn,
    stride_wd,
    stride_dhm,
    stride_dhd,
    target_coef,
    smooth_coef,
    filter_eps,
    HAS_BIAS: tl.constexpr,
    SMOOTH: tl.constexpr,
    FILTER: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """dh_mode="two_pass": per row block, dh = sum over class tiles of dz W (no atomics)."""
    pid_m = tl.program_id(0)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = offs_m < N
    g = tl.load(g_ptr + offs_m, mask=row_mask, other=0.0)
    if tl.sum((g != 0).to(tl.int32), 0) > 0:
        lse = tl.load(lse_ptr + offs_m, mask=row_mask, other=0.0)
        y = tl.load(y_ptr + offs_m, mask=row_mask, other=-1)
        for nb in range(0, tl.cdiv(n, BLOCK_N)):
            offs_n = nb * BLOCK_N + tl.arange(0, BLOCK_N)
            col_mask = offs_n < n
            dz = _grad_logits_tile(
                h_ptr,
                w_ptr,
                b_ptr,
                lse,
                y,
                offs_m,
                offs_n,
                row_mask,
                col_mask,
                d,
                stride_hm,
                stride_hd,
                stride_wn,
                stride_wd,
                target_coef,
                smooth_coef,
                HAS_BIAS,
                SMOOTH,
                DOT_DTYPE,
                INPUT_PRECISION,
                BLOCK_M,
                BLOCK_N,
                BLOCK_K,
            )
            keep = True
            if FILTER:
                keep = tl.max(tl.max(tl.abs(dz), 1), 0) >= filter_eps
            if keep:
                dzg = tl.where(g[:, None] != 0, dz * g[:, None], 0.0)
                _tile_grad_update(
                    dzg,
                    h_ptr,
                    w_ptr,
                    dh_ptr,
                    dh_ptr,
                    offs_m,
                    offs_n,
                    row_mask,
                    col_mask,
                    d,
                    stride_hm,
                    stride_hd,
                    stride_wn,
                    stride_wd,
                    stride_dhm,
                    stride_dhd,
                    0,
                    0,
                    True,
                    False,
                    2,
                    DOT_DTYPE,
                    INPUT_PRECISION,
                    BLOCK_M,
                    BLOCK_N,
                    BLOCK_K,
                )
                tl.debug_barrier()


# ---------------------------------------------------------------------------------------------
# Launchers: validation, blocks and grid, tensors in and out
# ---------------------------------------------------------------------------------------------

_TL_DTYPE = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
DH_MODES = ("atomic", "two_pass")


@functools.cache
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2  # interpreter: a couple of programs per axis, to exercise the split paths


def _n_bucket(n: int) -> int:
    """Autotune key for n: its power-of-two bucket (so each new n does not retune)."""
    return triton.next_power_of_2(n)


def _dot_setup(hidden: torch.Tensor, weight: torch.Tensor):
    """(DOT_DTYPE, INPUT_PRECISION) for tl.dot.

    Interpreter: fp32 operands always (its bf16 dot is wrong). GPU: the inputs' dtype when
    hidden and weight agree (bf16/fp16 on tensor cores), fp32 when they differ; fp32 dots in
    IEEE precision, not TF32, so fp32 inputs get fp32 results as torch's matmul gives them.
    """
    if _utils.INTERPRET or hidden.dtype != weight.dtype:
        return tl.float32, "ieee"
    dt = _TL_DTYPE[hidden.dtype]
    return dt, ("ieee" if hidden.dtype == torch.float32 else "tf32")


def _check(op, hidden, weight, bias, target, label_smoothing, filter_eps=None):
    """Validate shapes, dtypes and devices (float64 hidden, weight: TypeError)."""
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden (N, d) and weight (n, d) must agree on d, got {tuple(hidden.shape)} "
            f"and {tuple(weight.shape)}"
        )
    N, n = hidden.shape[0], weight.shape[0]
    if n < 1:
        raise ValueError("weight must have at least one class (n >= 1)")
    if target.dim() != 1 or target.shape[0] != N:
        raise ValueError(f"target must be (N={N},), got {tuple(target.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must be an integer tensor, got {target.dtype}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != n):
        raise ValueError(f"bias must be (n={n},), got {tuple(bias.shape)}")
    tensors = [hidden, weight, target] + ([bias] if bias is not None else [])
    if len({t.device for t in tensors}) > 1:
        raise ValueError("hidden, weight, target and bias must be on one device")
    if not hidden.is_cuda and not _utils.INTERPRET:
        raise RuntimeError("linear_ce kernels need CUDA tensors, or TRITON_INTERPRET=1 on CPU")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if filter_eps is not None and not float(filter_eps) > 0.0:
        raise ValueError(f"filter_eps must be None or > 0, got {filter_eps!r}")
    floats = [hidden, weight] + ([bias] if bias is not None else [])
    for t in floats:
        if t.dtype not in _utils.KERNEL_FLOATS + (torch.float64,):
            raise ValueError(f"expected float32/float16/bfloat16 inputs, got {t.dtype}")
    # fp64 has no tensor-core dot: ops routes such calls to the chunked PyTorch twin
    _utils.check_kernel_floats(op, hidden=hidden, weight=weight)


def linear_ce_fwd(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
    *,
    class_splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row cross-entropy of hidden @ weight.T (+ bias): (loss (N,), lse (N,)) float32.

    hidden: (N, d) and weight: (n, d) float32/float16/bfloat16 (any strides); bias: (n,) or
    None; target: (N,) integer in [0, n) (not checked: the caller masks ignored rows).
    class_splits: how many class ranges the grid splits n into (default: enough programs
    for the device). float64 hidden/weight: TypeError (ops.linear_ce_fwd runs the twin).
    """
    _check("linear_ce_fwd", hidden, weight, bias, target, label_smoothing)
    N, d = hidden.shape
    n = weight.shape[0]
    dev = hidden.device
    if N == 0:
        empty = torch.empty(0, dtype=torch.float32, device=dev)
        return empty, empty.clone()
    if class_splits is None:
        # Enough (row block, split) programs for two waves, estimated at BLOCK_M = 128.
        class_splits = triton.cdiv(2 * _sm_count(dev), triton.cdiv(N, 128))
    max_splits = triton.cdiv(n, _SPLIT_ALIGN)
    splits = max(1, min(int(class_splits), max_splits))
    cols_per_split = triton.cdiv(triton.cdiv(n, splits), _SPLIT_ALIGN) * _SPLIT_ALIGN
    splits = triton.cdiv(n, cols_per_split)
    smooth = float(label_smoothing) > 0.0
    part = _utils.empty((3 if smooth else 2, splits, N), torch.float32, dev)
    # 1-D operands are made contiguous (cheap); the 2-D ones go in with their strides.
    y = target.to(torch.int64).contiguous()
    b = bias.contiguous() if bias is not None else hidden
    dot_dtype, precision = _dot_setup(hidden, weight)

    def grid(meta):
        return (triton.cdiv(N, meta["BLOCK_M"]), splits)

    linear_ce_fwd_kernel[grid](
        hidden,
        weight,
        b,
        y,
        part[0],
        part[1],
        part[2] if smooth else part[0],
        N,
        n,
        d,
        _n_bucket(n),
        cols_per_split,
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
    loss = lse - (1.0 - label_smoothing) * part[1].sum(0)
    if smooth:
        loss = loss - (label_smoothing / n) * part[2].sum(0)
    # NaN where lse = +inf, as torch's log_softmax and the twin give (not +inf)
    return torch.where(lse == float("inf"), torch.full_like(loss, float("nan")), loss), lse


def linear_ce_bwd(
    grad_loss: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    lse: torch.Tensor,
    label_smoothing: float = 0.0,
    *,
    dh_mode: str = "atomic",
    filter_eps: float | None = None,
    row_splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(dh (N, d), dW (n, d), db (n,) or None) float32 of sum_i grad_loss_i * loss_i.

    grad_loss: (N,) (0 on ignored rows: those rows cost nothing and get exactly zero);
    lse: (N,) from linear_ce_fwd; other arguments as there.
    dh_mode: "atomic" (default: one pass) or "two_pass" (deterministic, one more logits
    recompute). filter_eps: skip tiles whose |softmax - target| is below it everywhere
    (None: exact gradient). row_splits: row ranges per class block in the dW pass (default:
    enough programs for the device; "two_pass" forces 1 so dW is deterministic too).
    """
    _check("linear_ce_bwd", hidden, weight, bias, target, label_smoothing, filter_eps)
    if dh_mode not in DH_MODES:
        raise ValueError(f"dh_mode must be one of {DH_MODES}, got {dh_mode!r}")
    N, d = hidden.shape
    n = weight.shape[0]
    dev = hidden.device
    if grad_loss.shape != (N,) or lse.shape != (N,):
        raise ValueError(
            f"grad_loss and lse must be (N={N},), got {tuple(grad_loss.shape)} and "
            f"{tuple(lse.shape)}"
        )
    # Accumulated outputs: the kernels' config pre_hook zeroes them before each launch.
    dh = _utils.empty((N, d), torch.float32, dev)
    dW = _utils.empty((n, d), torch.float32, dev)
    db = _utils.empty((n,), torch.float32, dev) if bias is not None else None
    if N == 0:
        dh.zero_()
        dW.zero_()
        if db is not None:
            db.zero_()
        return dh, dW, db
    g = grad_loss.to(torch.float32).contiguous()
    lse = lse.to(torch.float32).contiguous()
    y = target.to(torch.int64).contiguous()
    b = bias.contiguous() if bias is not None else hidden
    dot_dtype, precision = _dot_setup(hidden, weight)
    two_pass = dh_mode == "two_pass"
    filt = filter_eps is not None
    coefs = (
        1.0 - float(label_smoothing),
        float(label_smoothing) / n,
        float(filter_eps) if filt else 0.0,
    )
    sms = _sm_count(dev)

    def grid(meta):
        n_blocks = triton.cdiv(n, meta["BLOCK_N"])
        m_blocks = triton.cdiv(N, meta["BLOCK_M"])
        if two_pass:
            split = 1
        elif row_splits is not None:
            split = row_splits
        else:
            split = triton.cdiv(sms, n_blocks)  # one wave of programs at least
        return (n_blocks, max(1, min(int(split), m_blocks)))

    linear_ce_bwd_kernel[grid](
        g,
        hidden,
        weight,
        b,
        y,
        lse,
        dh,
        dW,
        db if db is not None else dW,
        N,
        n,
        d,
        _n_bucket(n),
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        dh.stride(0),
        dh.stride(1),
        dW.stride(0),
        dW.stride(1),
        *coefs,
        HAS_BIAS=bias is not None,
        SMOOTH=float(label_smoothing) > 0.0,
        FILTER=filt,
        DH_ATOMIC=not two_pass,
        DOT_DTYPE=dot_dtype,
        INPUT_PRECISION=precision,
    )
    if two_pass:

        def grid_dh(meta):
            return (triton.cdiv(N, meta["BLOCK_M"]),)

        linear_ce_bwd_dh_kernel[grid_dh](
            g,
            hidden,
            weight,
            b,
            y,
            lse,
            dh,
            N,
            n,
            d,
            _n_bucket(n),
            hidden.stride(0),
            hidden.stride(1),
            weight.stride(0),
            weight.stride(1),
            dh.stride(0),
            dh.stride(1),
            *coefs,
            HAS_BIAS=bias is not None,
            SMOOTH=float(label_smoothing) > 0.0,
            FILTER=filt,
            DOT_DTYPE=dot_dtype,
            INPUT_PRECISION=precision,
        )
    return dh, dW, db
