"""List scores: the best k' members of each probed list by exact logit, in one launch.

Twin: reference/list_scores.py list_topk_ref (the contract and the CSR layout are there).
One program per (query i, probed slot j). It reads list c = lists[i, j] from the CSR
(`order`, `offsets`), walks its members BLOCK_L at a time, gathers their weight rows (and
bias) into a (BLOCK_L, BLOCK_D) register tile, BLOCK_D columns at a time, and accumulates
z = w_c . h_i (+ b_c) in fp32 (bf16/fp16 rows upcast on load: a gather GEMV, no tl.dot, so
no tensor-core or interpreter dtype issue). NaN logits and empty slots become -inf.

Running top-k' without a scratch buffer: every (score, id) pair is packed into one int64
key, the fp32 score's bits made order-preserving as a signed int32 in the high half and the
class id (< 2^31) in the low half, so one integer sort orders by score. The program keeps
its best BLOCK_L keys sorted descending; a new chunk is sorted ascending, and the
element-wise max of the two holds exactly the BLOCK_L largest of their union (the first
step of a bitonic merge), sorted again for the next chunk. At the end the first k' keys are
unpacked and stored: (N, p, k') scores and ids, never (N, p, largest list).

Index arithmetic is int64 (row * stride passes 2^31 at large n d). No host read in the
launcher beyond shapes and dtypes: it runs inside a training step.

Not yet exact on a GPU: on an H200 with triton 3.6 (2026-11-30) one fp32 case returned an
id from another key at k' = 40 (tests/test_cuda_kernels.py::test_list_topk_matches_twin),
so triton_softmax.ops runs the twin on CUDA tensors; the interpreter agrees with the twin.
That run also timed the search (this kernel and its merge) at 49 ms of a 58 ms lsh step
(n = 10^6, N = 4096, d = 256, 1.6% of classes scored): one program per (query, list) reads
its rows as a GEMV, where a tile of queries sharing a list would read them once: the
search on CUDA now does that on tensor cores (kernels/list_tiles.py, packing positions in
the list rather than class ids).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _utils

MAX_KEEP = 4096  # k' held and sorted in registers per program; larger k' runs the twin
_TILE = 8192  # max BLOCK_L * BLOCK_D elements of the gathered tile


@triton.jit
def _pack(z, ids):
    """int64 keys ordered as z (fp32, no NaN), ties by id; ids in [0, 2^31)."""
    bits = z.to(tl.int32, bitcast=True)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: flip the magnitude bits
    return (ordered.to(tl.int64) << 32) | ids


@triton.jit
def _unpack(key):
    """(z fp32, id int64) of keys made by _pack."""
    hi = key >> 32
    low = key - (hi << 32)
    ordered = hi.to(tl.int32)
    bits = ordered ^ ((ordered >> 31) & 0x7FFFFFFF)
    return bits.to(tl.float32, bitcast=True), low


@triton.jit
def _merge_chunk(
    best,
    h_ptr,
    w_ptr,
    b_ptr,
    order_ptr,
    i,
    c0,
    end,
    d,
    stride_hn,
    stride_hd,
    stride_wn,
    stride_wd,
    stride_b,
    HAS_BIAS: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """best (BLOCK_L,) keys sorted descending, merged with list members c0 .. c0 + BLOCK_L
    (positions in `order`, those past `end` empty)."""
    pos = c0 + tl.arange(0, BLOCK_L)
    ok = pos < end
    ids = tl.load(order_ptr + pos, mask=ok, other=0).to(tl.int64)
    z = tl.zeros((BLOCK_L,), tl.float32)
    for d0 in range(0, d, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        d_ok = cols < d
        h = tl.load(h_ptr + i * stride_hn + cols * stride_hd, mask=d_ok, other=0.0)
        w = tl.load(
            w_ptr + ids[:, None] * stride_wn + cols[None, :] * stride_wd,
            mask=ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        z += tl.sum(w.to(tl.float32) * h.to(tl.float32)[None, :], axis=1)
    if HAS_BIAS:
        z += tl.load(b_ptr + ids * stride_b, mask=ok, other=0.0).to(tl.float32)
    z = tl.where(ok & (z == z), z, float("-inf"))  # z != z: a NaN logit
    chunk = tl.sort(_pack(z, ids))  # ascending: max with the descending best = top set
    return tl.sort(tl.maximum(best, chunk), descending=True)


@triton.autotune(
    # 8 warps first: at k' = 1024 (fp32) 4 warps need 254 registers on sm_90a (check_sm90.py)
    configs=_utils.configs([triton.Config({}, num_warps=8), triton.Config({}, num_warps=4)]),
    key=["d", "BLOCK_L", "BLOCK_D"],
)
@triton.jit
def list_topk_kernel(
    h_ptr,
    w_ptr,
    b_ptr,
    order_ptr,
    offsets_ptr,
    lists_ptr,
    scores_ptr,
    ids_ptr,
    p,
    d,
    k_out,
    stride_hn,
    stride_hd,
    stride_wn,
    stride_wd,
    stride_b,
    stride_ln,
    stride_lp,
    stride_sn,
    stride_sp,
    stride_sk,
    stride_in,
    stride_ip,
    stride_ik,
    HAS_BIAS: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1).to(tl.int64)
    lst = tl.load(lists_ptr + i * stride_ln + j * stride_lp).to(tl.int64)
    start = tl.load(offsets_ptr + lst)
    end = tl.load(offsets_ptr + lst + 1)
    slots = tl.arange(0, BLOCK_L)
    best = _pack(tl.full((BLOCK_L,), float("-inf"), tl.float32), slots.to(tl.int64) * 0)
    for c0 in range(start, end, BLOCK_L):  # sorted descending: the best so far
        best = _merge_chunk(
            best,
            h_ptr,
            w_ptr,
            b_ptr,
            order_ptr,
            i,
            c0,
            end,
            d,
            stride_hn,
            stride_hd,
            stride_wn,
            stride_wd,
            stride_b,
            HAS_BIAS,
            BLOCK_L,
            BLOCK_D,
        )
    score, cls = _unpack(best)
    cls = tl.where(score == float("-inf"), -1, cls)
    keep = slots < k_out
    tl.store(scores_ptr + i * stride_sn + j * stride_sp + slots * stride_sk, score, mask=keep)
    tl.store(ids_ptr + i * stride_in + j * stride_ip + slots * stride_ik, cls, mask=keep)


def list_topk_fits(hidden, weight, bias, order, offsets, lists, k, max_list) -> bool:
    """Whether the kept set fits in registers (k' = min(k, max_list) <= MAX_KEEP):
    ops.list_topk's capacity rule (the twin runs otherwise)."""
    return min(int(k), int(max_list)) <= MAX_KEEP


def list_topk(hidden, weight, bias, order, offsets, lists, k, max_list):
    """(scores (N, p, k') float32, ids (N, p, k') int64), k' = min(k, max_list): the best
    members of every probed list, best first; same contract as list_topk_ref."""
    _utils.check_hidden_weight(hidden, weight)
    N, d = hidden.shape
    n = weight.shape[0]
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias must be ({n},), got {tuple(bias.shape)}")
    if lists.dim() != 2 or lists.shape[0] != N:
        raise ValueError(f"lists must be ({N}, p), got {tuple(lists.shape)}")
    if order.dim() != 1 or offsets.dim() != 1 or offsets.shape[0] < 1:
        raise ValueError("order must be (m,) and offsets (C + 1,)")
    for name, t in (("order", order), ("offsets", offsets), ("lists", lists)):
        if t.dtype != torch.int64:
            raise TypeError(f"{name} must be int64, got {t.dtype}")
    if n >= 2**31:
        raise ValueError(f"weight has {n} rows; class ids must fit in 31 bits")
    k, max_list = int(k), int(max_list)
    if k < 0 or max_list < 0:
        raise ValueError(f"k and max_list must be >= 0, got {k}, {max_list}")
    _utils.check_devices(
        hidden.device, weight=weight, bias=bias, order=order, offsets=offsets, lists=lists
    )
    p = lists.shape[1]
    k_out = min(k, max_list)
    _utils.check_kernel_floats("list_topk", hidden=hidden, weight=weight, bias=bias)
    if k_out > MAX_KEEP:
        raise ValueError(
            f"list_topk keeps at most {MAX_KEEP} per list in registers, got k' = {k_out} "
            "(ops.list_topk runs the PyTorch twin there: list_topk_fits)"
        )
    order, offsets = order.contiguous(), offsets.contiguous()
    scores = _utils.empty((N, p, k_out), torch.float32, hidden.device)
    ids = _utils.empty((N, p, k_out), torch.int64, hidden.device)
    if N == 0 or p == 0 or k_out == 0:
        return scores, ids
    if order.numel() == 0:  # no list has a member
        return scores.fill_(float("-inf")), ids.fill_(-1)
    # the kept set is BLOCK_L wide; chunks as wide, at least 32 (or the largest list)
    BLOCK_L = _utils.next_pow2(max(k_out, min(32, max_list)))
    BLOCK_D = max(8, min(_utils.next_pow2(d), _TILE // BLOCK_L))
    grid = (N, p)
    list_topk_kernel[grid](
        hidden,
        weight,
        bias if bias is not None else weight,
        order,
        offsets,
        lists,
        scores,
        ids,
        p,
        d,
        k_out,
        hidden.stride(0),
        hidden.stride(1),
        weight.stride(0),
        weight.stride(1),
        bias.stride(0) if bias is not None else 0,
        lists.stride(0),
        lists.stride(1),
        scores.stride(0),
        scores.stride(1),
        scores.stride(2),
        ids.stride(0),
        ids.stride(1),
        ids.stride(2),
        HAS_BIAS=bias is not None,
        BLOCK_L=BLOCK_L,
        BLOCK_D=BLOCK_D,
    )
    return scores, ids
