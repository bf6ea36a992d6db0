"""Dense weight gradient of the sampled softmax: dW[ids_ij] += coef_ij h_i, candidate rows only.

Twin: reference.sampled_logits.scatter_grad_weight_ref (index_add). Two kernels, one launcher:

  atomics (default)   one program per (example, block of BLOCK_C slots) adds the
                      (BLOCK_C, BLOCK_D) tile coef h into dW with fp32 atomics; slots with
                      coef = 0 (padding) and ids outside [0, n) issue no atomics. The sum
                      order of a row hit by several examples depends on scheduling.
  deterministic=True  sort the flat ids (stable), CSR offsets per class by searchsorted, and
                      one program per (class row, d block) sums its segment in sorted order
                      BLOCK_E slots at a time and stores the row (zeros where the segment is
                      empty): bitwise reproducible. Its block sizes are fixed (not tuned), so
                      the summation order, and the bits, are the same in every process.

Both return fp32 (n, d); the launcher rejects fp64 coefficients or hidden (ops.py routes them
to the twin). The sparse-gradient option (reference.sampled_logits.sparse_grad_weight_ref)
coalesces in torch: it needs a host sync for nnz anyway.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _utils


@triton.autotune(
    configs=_utils.configs(
        [
            triton.Config({"BLOCK_C": 16, "BLOCK_D": 64}, num_warps=4),
            triton.Config({"BLOCK_C": 16, "BLOCK_D": 128}, num_warps=4),
            triton.Config({"BLOCK_C": 32, "BLOCK_D": 128}, num_warps=8),
            triton.Config({"BLOCK_C": 8, "BLOCK_D": 256}, num_warps=4),
        ]
    ),
    key=["d", "M1"],
    reset_to_zero=["dw_ptr"],  # the kernel accumulates: tuning runs must start from zero
)
@triton.jit
def scatter_grad_weight_atomic_kernel(
    coef_ptr,
    ids_ptr,
    h_ptr,
    dw_ptr,
    M1,
    d,
    n,
    stride_cn,
    stride_cc,
    stride_in,
    stride_ic,
    stride_hn,
    stride_hd,
    stride_wn,
    stride_wd,
    BLOCK_C: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    cc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cc < M1
    c = tl.load(coef_ptr + i * stride_cn + cc * stride_cc, mask=c_ok, other=0.0).to(tl.float32)
    ids = tl.load(ids_ptr + i * stride_in + cc * stride_ic, mask=c_ok, other=0).to(tl.int64)
    hit = c_ok & (c != 0.0) & (ids >= 0) & (ids < n)
    for d0 in range(0, d, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        d_ok = dd < d
        h = tl.load(h_ptr + i * stride_hn + dd * stride_hd, mask=d_ok, other=0.0).to(tl.float32)
        tl.atomic_add(
            dw_ptr + ids[:, None] * stride_wn + dd[None, :] * stride_wd,
            c[:, None] * h[None, :],
            mask=hit[:, None] & d_ok[None, :],
            sem="relaxed",
        )


@triton.jit
def scatter_grad_weight_segment_kernel(
    coef_ptr,
    h_ptr,
    order_ptr,
    seg_ptr,
    dw_ptr,
    M1,
    d,
    stride_cn,
    stride_cc,
    stride_hn,
    stride_hd,
    stride_wn,
    stride_wd,
    BLOCK_E: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    dd = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = dd < d
    lo = tl.load(seg_ptr + r)
    hi = tl.load(seg_ptr + r + 1)
    acc = tl.zeros((BLOCK_E, BLOCK_D), tl.float32)
    for e0 in range(lo, hi, BLOCK_E):
        e = e0 + tl.arange(0, BLOCK_E)
        e_ok = e < hi
        src = tl.load(order_ptr + e, mask=e_ok, other=0)  # flat slot i * M1 + j
        row = src // M1
        c = tl.load(
            coef_ptr + row * stride_cn + (src - row * M1) * stride_cc, mask=e_ok, other=0.0
        ).to(tl.float32)
        h = tl.load(
            h_ptr + row[:, None] * stride_hn + dd[None, :] * stride_hd,
            mask=e_ok[:, None] & d_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += c[:, None] * h
    tl.store(dw_ptr + r * stride_wn + dd * stride_wd, tl.sum(acc, axis=0), mask=d_ok)


def scatter_grad_weight(coef, ids, hidden, n, deterministic=False):
    """Dense dW (n, d) fp32; same contract as the twin scatter_grad_weight_ref.

    coef: (N, M+1) float; ids: (N, M+1) int; hidden: (N, d) float. deterministic=True
    selects the sort + segment-reduce kernel (bitwise reproducible) instead of atomics.
    """
    _utils.check_float("hidden", hidden)
    if (
        coef.dim() != 2
        or ids.shape != coef.shape
        or hidden.dim() != 2
        or hidden.shape[0] != coef.shape[0]
    ):
        raise ValueError(
            f"coef, ids (N, M+1) and hidden (N, d) expected, got "
            f"{tuple(coef.shape)}, {tuple(ids.shape)}, {tuple(hidden.shape)}"
        )
    _utils.check_device("ids", ids, coef.device)
    _utils.check_device("hidden", hidden, coef.device)
    _utils.check_kernel_floats("scatter_grad_weight", coef=coef, hidden=hidden)
    (N, M1), d = coef.shape, hidden.shape[1]
    dev = coef.device
    if not deterministic:
        dw = torch.zeros((n, d), dtype=torch.float32, device=dev)
        if N == 0 or M1 == 0 or n == 0:
            return dw

        def grid(meta):
            return (N, triton.cdiv(M1, meta["BLOCK_C"]))

        scatter_grad_weight_atomic_kernel[grid](
            coef,
            ids,
            hidden,
            dw,
            M1,
            d,
            n,
            coef.stride(0),
            coef.stride(1),
            ids.stride(0),
            ids.stride(1),
            hidden.stride(0),
            hidden.stride(1),
            dw.stride(0),
            dw.stride(1),
        )
        return dw
    dw = _utils.empty((n, d), torch.float32, dev)
    if n == 0:
        return dw
    flat = ids.reshape(-1).long()
    sorted_ids, order = torch.sort(flat, stable=True)
    seg = torch.searchsorted(sorted_ids, torch.arange(n + 1, device=dev, dtype=torch.int64))
    BLOCK_D = min(128, _utils.next_pow2(d))
    scatter_grad_weight_segment_kernel[(n, triton.cdiv(d, BLOCK_D))](
        coef,
        hidden,
        order,
        seg,
        dw,
        max(M1, 1),
        d,
        coef.stride(0),
        coef.stride(1),
        hidden.stride(0),
        hidden.stride(1),
        dw.stride(0),
        dw.stride(1),
        BLOCK_E=16,
        BLOCK_D=BLOCK_D,
        num_warps=4,
    )
    return dw
