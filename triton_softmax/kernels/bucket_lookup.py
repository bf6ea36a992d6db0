"""Bucket lookup: per query, read its L buckets, count collisions, keep the best C ids.

Twins: reference/simhash.py lsh_candidates_ref (codes given) and lsh_query_ref
(simhash_codes_ref then lsh_candidates_ref). One program handles BLOCK_Q queries; per query it

  1. takes its L codes, from memory or, fused (HASH=True), from a _simhash_tile of the
     program's BLOCK_Q rows computed with tl.dot in the same launch (no codes round trip);
  2. reads at most B = max_per_bucket ids of each bucket from the CSR table into an
     (L_PAD, B_PAD) register tile, empty slots holding a sentinel;
  3. sorts the P = L_PAD * B_PAD ids (tl.sort, the one O(P log^2 P) step); the collision
     count of an id is the length of its run, found from its neighbours (tl.gather) and a
     running max of run starts;
  4. ranks the run ends by count without a second sort (one cumsum per count level, L of
     them) and scatters the first C to their slots: ids most collided first, ties
     broken by the smaller id, -1 / 0 in the empty slots.

Nothing of size N x L x B is materialised (the twin builds and sorts that tensor). Ties at
the cut-off may keep different ids than the twin, whose torch.topk order within ties is
unspecified; the kept collision counts are the same.

The bucket table build on refresh (reference/simhash.py bucket_table_ref) stays in torch:
it is a stable sort of L rows of n codes plus one searchsorted, which torch runs as a
device-wide radix sort (CUB) at memory bandwidth. A Triton version would be a counting
sort (histogram atomics, a prefix scan, then a scatter) whose scatter must also keep the
randomised order inside a bucket that makes a capped read a uniform subsample: atomics
give no order, so it would need the same stable sort anyway. It runs once per refresh, not
per step. So no kernel here, and ops.bucket_table keeps the twin on every device.

The uniform samples T and the target are added by candidates.build_candidates in torch: its
draws come from the caller's torch.Generator, so the Triton and torch paths (and resumed
runs) see the same T; it costs one sort of the (N, C) ids.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _utils
from .simhash import _simhash_tile, hash_args

MAX_P = 16384  # ids held and sorted in registers per query; more: ops runs the twin
MAX_HASH_COLS = 512  # L_PAD * K_PAD of the fused hash tile; more hashes in a separate launch


@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b)


@triton.autotune(
    # 8 warps first: with fused hashing 4 warps spill a few bytes on sm_90a (check_sm90.py)
    configs=_utils.configs([triton.Config({}, num_warps=8), triton.Config({}, num_warps=4)]),
    key=["C", "L_PAD", "B_PAD", "HASH"],
)
@triton.jit
def lsh_lookup_kernel(
    codes_ptr,
    stride_qn,
    stride_ql,
    x_ptr,
    stride_xm,
    stride_xd,
    d,
    planes_ptr,
    stride_pl,
    stride_pk,
    stride_pd,
    K,
    bias_ptr,
    stride_b,
    bias_value,
    max_norm_ptr,
    sorted_ids_ptr,
    stride_sl,
    stride_sn,
    offsets_ptr,
    stride_ol,
    stride_oc,
    num_codes,
    out_ids_ptr,
    stride_on,
    stride_oc_,
    out_coll_ptr,
    stride_cn,
    stride_cc,
    N,
    L,
    B,
    C,
    HASH: tl.constexpr,
    BIAS_MODE: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
    K_PAD: tl.constexpr,
    L_PAD: tl.constexpr,
    B_PAD: tl.constexpr,
):
    P: tl.constexpr = L_PAD * B_PAD
    SENT: tl.constexpr = 2147483647  # > every id (sorted_ids is int32)
    q0 = tl.program_id(0).to(tl.int64) * BLOCK_Q
    qs = q0 + tl.arange(0, BLOCK_Q)
    tabs = tl.arange(0, L_PAD)
    if HASH:
        code_tile = _simhash_tile(
            x_ptr,
            stride_xm,
            stride_xd,
            qs,
            qs < N,
            d,
            planes_ptr,
            stride_pl,
            stride_pk,
            stride_pd,
            L,
            K,
            0,
            bias_ptr,
            stride_b,
            bias_value,
            max_norm_ptr,
            BIAS_MODE,
            False,
            BLOCK_Q,
            BLOCK_D,
            L_PAD,
            K_PAD,
        )
    else:
        code_tile = tl.load(
            codes_ptr + qs[:, None] * stride_qn + tabs[None, :] * stride_ql,
            mask=(qs < N)[:, None] & (tabs < L)[None, :],
            other=0,
        )
    slots = tl.arange(0, B_PAD)
    offs = tl.arange(0, P)
    for q in range(0, BLOCK_Q):
        row = q0 + q
        if row < N:
            code = tl.sum(tl.where(tl.arange(0, BLOCK_Q)[:, None] == q, code_tile, 0), axis=0)
            t_ok = (tabs < L) & (code >= 0) & (code < num_codes)
            o_ptr = offsets_ptr + tabs.to(tl.int64) * stride_ol + code.to(tl.int64) * stride_oc
            start = tl.load(o_ptr, mask=t_ok, other=0)
            end = tl.load(o_ptr + stride_oc, mask=t_ok, other=0)
            pos = start[:, None] + slots[None, :]
            ok = t_ok[:, None] & (slots < B)[None, :] & (pos < end[:, None])
            ids = tl.load(
                sorted_ids_ptr + tabs.to(tl.int64)[:, None] * stride_sl + pos * stride_sn,
                mask=ok,
                other=SENT,
            )
            ids = tl.sort(tl.reshape(tl.where(ok, ids, SENT), (P,)))
            # runs of equal ids: count = position - run start + 1, read at the run's end
            prev = tl.gather(ids, tl.maximum(offs - 1, 0), 0)
            nxt = tl.gather(ids, tl.minimum(offs + 1, P - 1), 0)
            run_start = tl.associative_scan(
                tl.where((offs == 0) | (ids != prev), offs, 0), 0, _max_combine
            )
            run_end = ((offs == P - 1) | (ids != nxt)) & (ids != SENT)
            count = tl.minimum(offs - run_start + 1, L)
            # rank without a second sort: run ends are in id order, so the slot of a run end
            # with count c is #(run ends with count > c) + #(earlier run ends with count c):
            # one cumsum per count level, from L collisions down
            slot = tl.zeros((P,), tl.int32)
            hits = tl.zeros((), tl.int32)
            for j in range(0, L):
                at = run_end & (count == L - j)
                slot = tl.where(at, hits + tl.cumsum(at.to(tl.int32), axis=0) - 1, slot)
                hits += tl.sum(at.to(tl.int32), axis=0)
            out_row = out_ids_ptr + row * stride_on
            coll_row = out_coll_ptr + row * stride_cn
            keep = run_end & (slot < C)
            tl.store(out_row + slot * stride_oc_, ids.to(tl.int64), mask=keep)
            tl.store(coll_row + slot * stride_cc, count.to(tl.int32), mask=keep)
            for c0 in range(0, C, P):  # the slots past the last hit: -1 and 0
                cc = c0 + offs
                empty = (cc >= hits) & (cc < C)
                tl.store(out_row + cc * stride_oc_, tl.full((P,), -1, tl.int64), mask=empty)
                tl.store(coll_row + cc * stride_cc, tl.zeros((P,), tl.int32), mask=empty)


def _pads(L: int, K: int | None, B: int, n: int) -> tuple[int, int, int]:
    """(K_PAD, L_PAD, B_PAD) of the register tiles: L tables of K bits (K None: codes given,
    no hashing), at most B of the n ids read per bucket."""
    if K is None:
        K_PAD, L_PAD = 1, _utils.next_pow2(L)
    else:
        K_PAD = _utils.next_pow2(K)
        L_PAD = max(_utils.next_pow2(L), 16 // K_PAD)
    return K_PAD, L_PAD, _utils.next_pow2(min(B, n) if n else 1)


def _fits(sorted_ids, K: int | None, max_per_bucket) -> bool:
    if sorted_ids.dim() != 2 or int(max_per_bucket) < 1:
        return True  # malformed: the launcher says what is wrong
    _, L_PAD, B_PAD = _pads(sorted_ids.shape[0], K, int(max_per_bucket), sorted_ids.shape[1])
    return L_PAD * B_PAD <= MAX_P


def lsh_candidates_fits(query_codes, sorted_ids, offsets, num_candidates, max_per_bucket) -> bool:
    """Whether a query's L x max_per_bucket ids fit in registers (MAX_P): the fallback rule of
    ops.lsh_candidates, which runs the twin where they do not."""
    return _fits(sorted_ids, None, max_per_bucket)


def lsh_query_fits(
    hidden, hyperplanes, bias, sorted_ids, offsets, num_candidates, max_per_bucket
) -> bool:
    """lsh_candidates_fits for the fused hash and lookup (ops.lsh_query's fallback rule)."""
    K = hyperplanes.shape[1] if hyperplanes.dim() == 3 else None
    return _fits(sorted_ids, K, max_per_bucket)


def lsh_lookup(
    query_codes, hidden, hyperplanes, bias, sorted_ids, offsets, num_candidates, max_per_bucket
):
    """The launcher behind lsh_candidates (query_codes given) and lsh_query (hidden given:
    hash and look up in one launch). Returns (ids (N, C) int64, collisions (N, C) int32).
    Tables too large for registers (see lsh_candidates_fits): ValueError."""
    if sorted_ids.dim() != 2 or offsets.dim() != 2 or offsets.shape[0] != sorted_ids.shape[0]:
        raise ValueError("sorted_ids must be (L, n) and offsets (L, 2^K + 1)")
    if sorted_ids.dtype != torch.int32 or offsets.dtype != torch.int64:
        raise TypeError("sorted_ids must be int32 and offsets int64")
    C, B = int(num_candidates), int(max_per_bucket)
    if C < 0 or B < 1:
        raise ValueError(f"num_candidates must be >= 0 and max_per_bucket >= 1, got {C}, {B}")
    L = sorted_ids.shape[0]
    hashing = query_codes is None
    probe = hidden if hashing else query_codes
    device = probe.device
    _utils.check_devices(device, sorted_ids=sorted_ids, offsets=offsets)
    N = probe.shape[0]
    if hashing:
        planes, bias_t, bias_value, bias_mode, _, stride_b = hash_args(
            hidden, hyperplanes, bias, None
        )
        if planes.shape[0] != L:
            raise ValueError(f"hyperplanes have {planes.shape[0]} tables, the index has {L}")
        K = planes.shape[1]
    else:
        if query_codes.dim() != 2 or query_codes.shape[1] != L:
            raise ValueError(f"query_codes must be (N, {L}), got {tuple(query_codes.shape)}")
        if query_codes.dtype != torch.int32:
            raise TypeError(f"query_codes must be int32, got {query_codes.dtype}")
        K = 1
    K_PAD, L_PAD, B_PAD = _pads(L, K if hashing else None, B, sorted_ids.shape[1])
    if L_PAD * B_PAD > MAX_P:
        raise ValueError(
            f"{L_PAD} x {B_PAD} ids per query exceed MAX_P={MAX_P} registers "
            "(ops.lsh_candidates / ops.lsh_query run the twin for such tables)"
        )
    if hashing and L_PAD * K_PAD > MAX_HASH_COLS:
        from .simhash import simhash_codes

        codes = simhash_codes(hidden, hyperplanes, bias, None)
        return lsh_lookup(codes, None, None, None, sorted_ids, offsets, C, B)
    out_ids = _utils.empty((N, C), torch.int64, device)
    out_coll = _utils.empty((N, C), torch.int32, device)
    if N == 0 or C == 0:
        return out_ids, out_coll
    if hashing:
        x = hidden
        BLOCK_Q, BLOCK_D = 16, min(64, max(16, _utils.next_pow2(x.shape[1])))
        codes, s_qn, s_ql = sorted_ids, 0, 0  # unused
        hash_ptrs = (
            x,
            x.stride(0),
            x.stride(1),
            x.shape[1],
            planes,
            planes.stride(0),
            planes.stride(1),
            planes.stride(2),
            K,
            bias_t,
            stride_b,
            bias_value,
            planes,
        )
    else:
        BLOCK_Q, BLOCK_D, bias_mode = 1, 16, 0
        codes, s_qn, s_ql = query_codes, query_codes.stride(0), query_codes.stride(1)
        hash_ptrs = (sorted_ids, 0, 0, 0, offsets, 0, 0, 0, K, offsets, 0, 0.0, offsets)
    grid = (triton.cdiv(N, BLOCK_Q),)
    lsh_lookup_kernel[grid](
        codes,
        s_qn,
        s_ql,
        *hash_ptrs,
        sorted_ids,
        sorted_ids.stride(0),
        sorted_ids.stride(1),
        offsets,
        offsets.stride(0),
        offsets.stride(1),
        offsets.shape[1] - 1,
        out_ids,
        out_ids.stride(0),
        out_ids.stride(1),
        out_coll,
        out_coll.stride(0),
        out_coll.stride(1),
        N,
        L,
        B,
        C,
        HASH=hashing,
        BIAS_MODE=bias_mode,
        BLOCK_Q=BLOCK_Q,
        BLOCK_D=BLOCK_D,
        K_PAD=K_PAD,
        L_PAD=L_PAD,
        B_PAD=B_PAD,
    )
    return out_ids, out_coll


def lsh_candidates(query_codes, sorted_ids, offsets, num_candidates, max_per_bucket):
    """Same contract as lsh_candidates_ref: (ids (N, C) int64, collisions (N, C) int32)."""
    return lsh_lookup(
        query_codes, None, None, None, sorted_ids, offsets, num_candidates, max_per_bucket
    )


def lsh_query(hidden, hyperplanes, bias, sorted_ids, offsets, num_candidates, max_per_bucket):
    """Hash the queries hidden (N, d) and look them up, in one launch (see ops.lsh_query)."""
    return lsh_lookup(
        None, hidden, hyperplanes, bias, sorted_ids, offsets, num_candidates, max_per_bucket
    )
