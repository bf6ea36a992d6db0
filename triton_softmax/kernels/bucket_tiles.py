"""Bucket-tiled sampled logits: the queries and classes that share an LSH bucket as dense tiles.

For table l and bucket c, the tile is z = H[queries in c] @ W[classes in c]^T (+ b): a dense
product on tensor cores instead of per-example gathers, each class row read once per tile
rather than once per query. Per query and table the kernel returns the log-sum-exp of its
tile entries, with two masks that make the union of a query's buckets a set:

    keep_ij = (j != y_i)  and  code_l'(i) != code_l'(j) for every l' < l

(the target is scored apart, once; a class sharing several buckets with the query counts in
the first table where they collide). The caller (triton_softmax/bucket_shared.py) adds the target
logit and the shared uniform T term and takes the log-sum-exp over tables: the estimator of
the per-example scheme on S_i = the bucket union, with weight 1 on S_i, exactly.

    forward   lse[l, i] = log sum_{j in bucket_l(i), keep_ij} exp(z_ij)          (-inf if none)
    backward  p_ij = g[l, i] exp(z_ij - lse[l, i]) on kept entries (g = dloss/dlse)
              dh_i += p_ij W_j      dW_j += p_ij h_i      db_j += p_ij

Grid: (L, N), no host sync. The queries of table l are sorted by code (q_order) and program
(l, p) works only if sorted position p starts a run of equal codes (run_end[l, p] >= 0): it
owns that bucket and walks its query blocks x class blocks. Every non-empty (table, bucket)
pair gets exactly one program, so lse needs no atomics; the other programs exit at once
(cheap: N x L of them, a few microseconds on a GPU). The backward adds dh and dW with
atomics: a query row meets L buckets and a class row is met by every query block of its
bucket in every table. Buckets are uneven, so programs are too; many small buckets (small
batches, large K) leave tiles mostly padding, which is where the per-example gather wins.

Accumulation in fp32; dots on bf16/fp16 tensor cores on GPU, fp32-upcast operands under the
interpreter (its bf16 tl.dot is wrong in triton 3.9), IEEE fp32 dots for fp32 inputs (the
tile helpers and dot set-up are linear_ce's).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _utils
from .linear_ce import _dot_setup, _logits_tile, _tile_grad_update, _zero_grads


@triton.jit
def _keep_mask(qcode_ptr, kcode_ptr, qid, cid, y, row_mask, col_mask, l, L):
    """(BLOCK_M, BLOCK_N) bool: a real entry, not the target, not already met in a table < l."""
    keep = row_mask[:, None] & col_mask[None, :] & (cid[None, :] != y[:, None])
    q_base = qcode_ptr + qid.to(tl.int64) * L
    k_base = kcode_ptr + cid.to(tl.int64) * L
    for lp in range(0, l):
        qc = tl.load(q_base + lp, mask=row_mask, other=-1)
        kc = tl.load(k_base + lp, mask=col_mask, other=-2)
        keep = keep & (qc[:, None] != kc[None, :])
    return keep


@triton.jit
def _bucket_range(qcode_ptr, q_order_ptr, run_end_ptr, off_ptr, l, p, N, L, num_buckets):
    """(q_end, lo, hi): this program's query run [p, q_end) and its bucket's class range."""
    end = tl.load(run_end_ptr + l * N + p)
    q_end = tl.maximum(end, p)  # not a run start: an empty query loop
    first = tl.load(q_order_ptr + l * N + p).to(tl.int64)
    code = tl.load(qcode_ptr + first * L + l).to(tl.int64)
    row = off_ptr + l.to(tl.int64) * (num_buckets + 1) + code
    return q_end, tl.load(row), tl.load(row + 1)


@triton.jit
def _query_block(q_order_ptr, y_ptr, l, N, qs, q_end, BLOCK_M: tl.constexpr):
    """(row_mask, query ids, their targets) of sorted positions [qs, qs + BLOCK_M) of table l."""
    offs_m = qs + tl.arange(0, BLOCK_M)
    row_mask = offs_m < q_end
    qid = tl.load(q_order_ptr + l * N + offs_m, mask=row_mask, other=0)
    y = tl.load(y_ptr + qid, mask=row_mask, other=-1)
    return row_mask, qid, y


@triton.jit
def _bucket_tile(
    h_ptr,
    w_ptr,
    b_ptr,
    qcode_ptr,
    kcode_ptr,
    ids_row,
    qid,
    y,
    row_mask,
    keep_rows,
    cs,
    hi,
    l,
    L,
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
    """One tile: class ids [cs, cs + BLOCK_N) of the bucket (ends at hi), their logits against
    the query block, and the keep mask over keep_rows. Returns (cid, col_mask, z, keep)."""
    offs_n = cs + tl.arange(0, BLOCK_N)
    col_mask = offs_n < hi
    cid = tl.load(ids_row + offs_n, mask=col_mask, other=0)
    z = _logits_tile(
        h_ptr,
        w_ptr,
        b_ptr,
        qid,
        cid,
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
    keep = _keep_mask(qcode_ptr, kcode_ptr, qid, cid, y, keep_rows, col_mask, l, L)
    return cid, col_mask, z, keep


def _configs(rows, pre_hook=None):
    return _utils.tile_configs(rows, (16, 16, 16, 4, 1), pre_hook)


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages). Buckets hold tens to a few hundred
# queries and classes, so tiles are smaller than linear_ce's. Every row compiles for sm_90a
# without register spills in bf16, with or without a bias (ptxas -v on triton 3.9 output:
# scripts/check_sm90.py);
# fp32 (IEEE dots on CUDA cores) spills a little in the larger ones.
_FWD_ROWS = [(64, 64, 64, 8, 3), (32, 64, 64, 4, 3), (32, 128, 32, 4, 3)]
_BWD_ROWS = [
    (64, 64, 32, 8, 3),
    (32, 64, 64, 4, 3),
    (32, 64, 32, 4, 3),
    (16, 128, 32, 4, 2),
    (16, 64, 64, 4, 2),
]


@triton.autotune(configs=_configs(_FWD_ROWS), key=["d", "L"])
@triton.jit
def bucket_tile_lse_fwd_kernel(
    h_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    qcode_ptr,
    kcode_ptr,
    q_order_ptr,
    run_end_ptr,
    ids_ptr,
    off_ptr,
    lse_ptr,
    N,
    n,
    d,
    L,
    num_buckets,
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
    l = tl.program_id(0)
    p = tl.program_id(1)
    q_end, lo, hi = _bucket_range(
        qcode_ptr, q_order_ptr, run_end_ptr, off_ptr, l, p, N, L, num_buckets
    )
    ids_row = ids_ptr + l.to(tl.int64) * n
    for qs in range(p, q_end, BLOCK_M):
        row_mask, qid, y = _query_block(q_order_ptr, y_ptr, l, N, qs, q_end, BLOCK_M)
        m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
        s_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for cs in range(lo, hi, BLOCK_N):
            cid, col_mask, z, keep = _bucket_tile(
                h_ptr,
                w_ptr,
                b_ptr,
                qcode_ptr,
                kcode_ptr,
                ids_row,
                qid,
                y,
                row_mask,
                row_mask,
                cs,
                hi,
                l,
                L,
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
            z = tl.where(keep, z, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(z, 1))
            # rows with nothing kept yet stay at m = -inf: shift by 0 there, not by -inf
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            s_i = s_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(z - m_safe[:, None]), 1)
            m_i = m_new
        lse = tl.where(s_i > 0, m_i + tl.log(tl.maximum(s_i, 1e-30)), float("-inf"))
        tl.store(lse_ptr + l * N + qid, lse, mask=row_mask)


@triton.autotune(configs=_configs(_BWD_ROWS, _zero_grads), key=["d", "L"])
@triton.jit
def bucket_tile_lse_bwd_kernel(
    g_ptr,
    lse_ptr,
    h_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    qcode_ptr,
    kcode_ptr,
    q_order_ptr,
    run_end_ptr,
    ids_ptr,
    off_ptr,
    dh_ptr,
    dw_ptr,
    db_ptr,
    N,
    n,
    d,
    L,
    num_buckets,
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
    l = tl.program_id(0)
    p = tl.program_id(1)
    q_end, lo, hi = _bucket_range(
        qcode_ptr, q_order_ptr, run_end_ptr, off_ptr, l, p, N, L, num_buckets
    )
    ids_row = ids_ptr + l.to(tl.int64) * n
    for qs in range(p, q_end, BLOCK_M):
        row_mask, qid, y = _query_block(q_order_ptr, y_ptr, l, N, qs, q_end, BLOCK_M)
        g = tl.load(g_ptr + l * N + qid, mask=row_mask, other=0.0)
        lse = tl.load(lse_ptr + l * N + qid, mask=row_mask, other=0.0)
        # rows with zero upstream gradient (ignored rows) or no kept entry add nothing
        live = row_mask & (g != 0.0) & (lse != float("-inf"))
        if tl.max(live.to(tl.int32), 0) > 0:
            for cs in range(lo, hi, BLOCK_N):
                cid, col_mask, z, keep = _bucket_tile(
                    h_ptr,
                    w_ptr,
                    b_ptr,
                    qcode_ptr,
                    kcode_ptr,
                    ids_row,
                    qid,
                    y,
                    row_mask,
                    live,
                    cs,
                    hi,
                    l,
                    L,
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
                p_ij = tl.where(keep, tl.exp(z - lse[:, None]), 0.0) * g[:, None]
                # dW rows and dh rows are shared with other programs: atomic adds
                _tile_grad_update(
                    p_ij,
                    h_ptr,
                    w_ptr,
                    dh_ptr,
                    dw_ptr,
                    qid,
                    cid,
                    row_mask,
                    col_mask,
                    d,
                    stride_hm,
                    stride_hd,
                    stride_wn,
                    stride_wd,
                    d,
                    1,
                    d,
                    1,
                    False,
                    True,
                    1,
                    DOT_DTYPE,
                    INPUT_PRECISION,
                    BLOCK_M,
                    BLOCK_N,
                    BLOCK_K,
                )
                if HAS_BIAS:
                    tl.atomic_add(db_ptr + cid, tl.sum(p_ij, 0), mask=col_mask, sem="relaxed")


def _query_runs(query_codes: torch.Tensor):
    """(q_order (L, N) int32, run_end (L, N) int32): per table the queries sorted by code, and
    for each sorted position that starts a run of one code the end of that run (else -1)."""
    codes_t = query_codes.T.contiguous()  # (L, N)
    sorted_codes, order = torch.sort(codes_t, dim=1, stable=True)
    run_end = torch.searchsorted(sorted_codes, sorted_codes, right=True)
    start = torch.ones_like(sorted_codes, dtype=torch.bool)
    start[:, 1:] = sorted_codes[:, 1:] != sorted_codes[:, :-1]
    run_end = torch.where(start, run_end, torch.full_like(run_end, -1))
    return order.to(torch.int32).contiguous(), run_end.to(torch.int32).contiguous()


def _check(op, hidden, weight, bias, target, query_codes, key_codes, sorted_ids, offsets):
    """Validate shapes, devices and dtypes (float64 hidden, weight: TypeError)."""
    N, d = hidden.shape
    n = weight.shape[0]
    L = query_codes.shape[1] if query_codes.dim() == 2 else -1
    if weight.dim() != 2 or weight.shape[1] != d:
        raise ValueError(
            f"hidden (N, d) and weight (n, d) disagree: {tuple(hidden.shape)}, "
            f"{tuple(weight.shape)}"
        )
    if target.shape != (N,) or target.dtype.is_floating_point:
        raise ValueError(f"target must be integer (N={N},), got {tuple(target.shape)}")
    if query_codes.shape != (N, L) or key_codes.shape != (n, L):
        raise ValueError(
            f"codes must be (N, L) and (n, L), got {tuple(query_codes.shape)} "
            f"and {tuple(key_codes.shape)}"
        )
    if sorted_ids.shape != (L, n) or offsets.dim() != 2 or offsets.shape[0] != L:
        raise ValueError(
            f"sorted_ids must be (L, n) and offsets (L, 2^K + 1), got "
            f"{tuple(sorted_ids.shape)} and {tuple(offsets.shape)}"
        )
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias must be (n={n},), got {tuple(bias.shape)}")
    tensors = [hidden, weight, target, query_codes, key_codes, sorted_ids, offsets]
    if len({t.device for t in tensors + ([bias] if bias is not None else [])}) > 1:
        raise ValueError("all inputs of bucket_tile_lse must be on one device")
    if not hidden.is_cuda and not _utils.INTERPRET:
        raise RuntimeError("bucket_tiles kernels need CUDA tensors, or TRITON_INTERPRET=1")
    _utils.check_kernel_floats(op, hidden=hidden, weight=weight)


def _common(hidden, weight, bias, target, query_codes, key_codes, sorted_ids, offsets):
    q_order, run_end = _query_runs(query_codes)
    return dict(
        y=target.to(torch.int64).contiguous(),
        qcode=query_codes.to(torch.int32).contiguous(),
        kcode=key_codes.to(torch.int32).contiguous(),
        q_order=q_order,
        run_end=run_end,
        ids=sorted_ids.to(torch.int32).contiguous(),
        off=offsets.to(torch.int64).contiguous(),
        b=bias.contiguous() if bias is not None else hidden,
    )


def bucket_tile_lse(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    query_codes: torch.Tensor,
    key_codes: torch.Tensor,
    sorted_ids: torch.Tensor,
    offsets: torch.Tensor,
) -> torch.Tensor:
    """Per table and query, the log-sum-exp of its bucket tile: (L, N) float32, -inf if empty.

    hidden (N, d), weight (n, d): float32/float16/bfloat16, any strides; bias (n,) | None;
    target (N,) integer in [0, n) (ignored rows: pass any valid id and a zero gradient);
    query_codes (N, L), key_codes (n, L): int32 codes in [0, 2^K); sorted_ids (L, n) and
    offsets (L, 2^K + 1): the index's bucket tables (reference/simhash.py bucket_table_ref).
    float64 hidden/weight: TypeError (ops.bucket_tile_lse runs the twin).
    """
    args = (hidden, weight, bias, target, query_codes, key_codes, sorted_ids, offsets)
    _check("bucket_tile_lse", *args)
    N, d = hidden.shape
    n, L = weight.shape[0], query_codes.shape[1]
    lse = _utils.empty((L, N), torch.float32, hidden.device)
    if N == 0 or L == 0:
        return lse
    lse.fill_(float("-inf"))
    c = _common(*args)
    dot_dtype, precision = _dot_setup(hidden, weight)
    bucket_tile_lse_fwd_kernel[(L, N)](
        hidden,
        weight,
        c["b"],
        c["y"],
        c["qcode"],
        c["kcode"],
        c["q_order"],
        c["run_end"],
        c["ids"],
        c["off"],
        lse,
        N,
        n,
        d,
        L,
        offsets.shape[1] - 1,
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        HAS_BIAS=bias is not None,
        DOT_DTYPE=dot_dtype,
        INPUT_PRECISION=precision,
    )
    return lse


def bucket_tile_lse_bwd(
    grad_lse: torch.Tensor,
    lse: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    query_codes: torch.Tensor,
    key_codes: torch.Tensor,
    sorted_ids: torch.Tensor,
    offsets: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients of sum(grad_lse * lse) w.r.t. hidden, weight, bias: fp32 (N, d), (n, d), (n,).

    grad_lse, lse: (L, N) float32 (lse from bucket_tile_lse); the rest as bucket_tile_lse.
    """
    args = (hidden, weight, bias, target, query_codes, key_codes, sorted_ids, offsets)
    _check("bucket_tile_lse_bwd", *args)
    N, d = hidden.shape
    n, L = weight.shape[0], query_codes.shape[1]
    dev = hidden.device
    dh = torch.zeros(N, d, dtype=torch.float32, device=dev)
    dw = torch.zeros(n, d, dtype=torch.float32, device=dev)
    db = torch.zeros(n, dtype=torch.float32, device=dev) if bias is not None else None
    if N == 0 or L == 0:
        return dh, dw, db
    c = _common(*args)
    dot_dtype, precision = _dot_setup(hidden, weight)
    bucket_tile_lse_bwd_kernel[(L, N)](
        grad_lse.to(torch.float32).contiguous(),
        lse.to(torch.float32).contiguous(),
        hidden,
        weight,
        c["b"],
        c["y"],
        c["qcode"],
        c["kcode"],
        c["q_order"],
        c["run_end"],
        c["ids"],
        c["off"],
        dh,
        dw,
        db if db is not None else dh,
        N,
        n,
        d,
        L,
        offsets.shape[1] - 1,
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        HAS_BIAS=bias is not None,
        DOT_DTYPE=dot_dtype,
        INPUT_PRECISION=precision,
    )
    return dh, dw, db
