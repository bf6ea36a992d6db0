"""List-tile top-k: each probed list scored against a tile of the queries probing it by
`tl.dot`, each (query, probe) keeping its best k' members in registers, in one launch.

Twin: reference/list_tiles.py list_tile_topk_ref (the contract, the tie rule and the CSR
layout are there). The (query, list) pairs are grouped by list and cut into tiles of
BLOCK_Q queries (the schedule of index/list_tiles.py, built here in fixed shapes from the
arguments' shapes: no host read). One program per tile: it walks the list's members BLOCK_L
at a time, gathers their rows, and scores the (BLOCK_Q, BLOCK_L) block on tensor cores (bf16 /
fp16 operands when hidden and rows share that dtype, fp32 "ieee" operands otherwise and
always under the interpreter, whose bf16 `tl.dot` is wrong), fp32 accumulation. A list's
rows are read once per tile of queries instead of once per query (list_scores.list_topk's
GEMV), and no (N, p x largest list) score buffer reaches HBM: only (N, p, k').

Running top-k' per query row: a (score, position) pair is packed into one int64 key, the
fp32 bits made order-preserving in the high half and 2^31 - 1 - position in the low half,
so one integer sort orders by score, ties by smaller position (smaller class id: positions
follow class ids inside a list); -0.0 is stored as +0.0 first so the two tie. Each row keeps
its best BLOCK_L keys sorted descending; a chunk sorted ascending, the element-wise max of
the two is exactly the BLOCK_L largest of the union (the first step of a bitonic merge),
sorted again (skipped for a chunk none of whose keys beats a row's smallest kept key). The
id is the key's own low half, so a score can only come back with the
position it was packed with.

The SimHash tables' scored lookup (index/list_tiles.search_table_tiles) is the same launch
with lists = the (table, bucket) CSR ranges of all L tables and probes = a query's L codes:
members may be int32 (the tables' sorted ids, read in place), max_list caps the read of
every list at its first max_list members (a bucket's first max_per_bucket ids; the twin
reads the same prefix), and tie_by_row packs the member's row instead of its position (ties
by smaller class id, the row returned): a bucket holds its ids in a random order.

Index arithmetic is int64 (row * stride passes 2^31 at large n d).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _utils

MAX_KEEP = 512  # k' per (query, probe) held in registers; larger k' runs the twin
BLOCK_Q = 16  # queries of one list per program (tl.dot's smallest M)
# the interpreter's tl.sort costs seconds per 1,024 keys and its tl.dot takes any shape:
# smaller tiles there (BLOCK_Q, and BLOCK_L as small as k' allows; more tile and chunk
# boundaries in the tests, too)
INTERPRET_BLOCK_Q = 4
_TILE = 16384  # max BLOCK_L * BLOCK_D elements of a gathered row block


@triton.jit
def _pack_pos(z, pos):
    """int64 keys ordered as z (fp32, no NaN, +0.0 for zeros), ties by smaller pos."""
    bits = z.to(tl.int32, bitcast=True)
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negative floats: flip the magnitude bits
    return (ordered.to(tl.int64) << 32) | (0x7FFFFFFF - pos)


@triton.jit
def _unpack_pos(key):
    """(z fp32, pos int64) of keys made by _pack_pos."""
    hi = key >> 32
    low = key - (hi << 32)
    ordered = hi.to(tl.int32)
    bits = ordered ^ ((ordered >> 31) & 0x7FFFFFFF)
    return bits.to(tl.float32, bitcast=True), 0x7FFFFFFF - low


@triton.autotune(
    configs=_utils.configs([triton.Config({}, num_warps=8), triton.Config({}, num_warps=4)]),
    key=["d", "BLOCK_L", "BLOCK_D"],
)
@triton.jit
def list_tile_topk_kernel(
    h_ptr,
    w_ptr,
    b_ptr,
    members_ptr,
    start_ptr,
    end_ptr,
    query_ptr,
    pair_ptr,
    scores_ptr,
    pos_ptr,
    d,
    k_out,
    stride_hn,
    stride_hd,
    stride_wn,
    stride_wd,
    stride_b,
    stride_sp,
    stride_pp,
    HAS_BIAS: tl.constexpr,
    TIE_ROW: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    start = tl.load(start_ptr + t)
    end = tl.load(end_ptr + t)  # == start for a tile no pair uses: no list is read
    slot = t * BLOCK_Q + tl.arange(0, BLOCK_Q)
    qi = tl.load(query_ptr + slot)
    pair = tl.load(pair_ptr + slot)  # unused slots: the scratch row P
    cols_l = tl.arange(0, BLOCK_L)
    zero = tl.zeros((BLOCK_Q, BLOCK_L), tl.int64)
    best = _pack_pos(tl.full((BLOCK_Q, BLOCK_L), float("-inf"), tl.float32), zero)
    for c0 in range(start, end, BLOCK_L):
        pos = c0 + cols_l
        ok = pos < end
        m = tl.load(members_ptr + pos, mask=ok, other=0).to(tl.int64)
        acc = tl.zeros((BLOCK_Q, BLOCK_L), tl.float32)
        for d0 in range(0, d, BLOCK_D):
            cols = d0 + tl.arange(0, BLOCK_D)
            d_ok = cols < d
            q = tl.load(
                h_ptr + qi[:, None] * stride_hn + cols[None, :] * stride_hd,
                mask=d_ok[None, :],
                other=0.0,
            )
            w = tl.load(
                w_ptr + m[:, None] * stride_wn + cols[None, :] * stride_wd,
                mask=ok[:, None] & d_ok[None, :],
                other=0.0,
            )
            acc = tl.dot(
                q.to(DOT_DTYPE), tl.trans(w.to(DOT_DTYPE)), acc, input_precision=INPUT_PRECISION
            )
        if HAS_BIAS:
            b = tl.load(b_ptr + m * stride_b, mask=ok, other=0.0).to(tl.float32)
            acc += b[None, :]
        z = tl.where(ok[None, :] & (acc == acc), acc, float("-inf"))  # acc != acc: NaN
        z = tl.where(z == 0.0, 0.0, z)  # -0.0 ties with +0.0
        # TIE_ROW: the row itself is packed (ties by smaller row, and the row comes back):
        # the SimHash tables' buckets hold their ids in a random order, not by id
        if TIE_ROW:
            tie = m
        else:
            tie = pos - start
        keys = _pack_pos(z, tie[None, :] + zero)
        # the sorts cost more than the dot: skip them when no row's kept set changes (most
        # chunks once the kept sets fill, when k' is small against the list)
        beats = tl.max(keys, axis=1) > tl.min(best, axis=1)
        if tl.max(beats.to(tl.int32), axis=0) > 0:
            chunk = tl.sort(keys, dim=1)  # ascending
            best = tl.sort(tl.maximum(best, chunk), dim=1, descending=True)
    score, at = _unpack_pos(best)
    at = tl.where(score == float("-inf"), -1, at)
    keep = (cols_l < k_out)[None, :] & (zero == 0)
    tl.store(scores_ptr + pair[:, None] * stride_sp + cols_l[None, :], score, mask=keep)
    tl.store(pos_ptr + pair[:, None] * stride_pp + cols_l[None, :], at, mask=keep)


def tile_schedule(
    lists: torch.Tensor, num_lists: int, offsets: torch.Tensor, tile: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (query, list) pairs of lists (N, p) int64 grouped by list in tiles of `tile`, in
    fixed shapes (T = ceil(N p / tile) + min(C, N p) tiles: a list's last tile is its only
    partial one): (start (T,), end (T,)) list positions of each tile (end = start for a tile
    no pair uses), query (T tile,) the query of each slot (0 where unused), pair (T tile,)
    its pair q * p + s (N p where unused). Torch ops on the device, no host read."""
    N, p = lists.shape
    P, C, dev = N * p, num_lists, lists.device
    flat = lists.reshape(-1)
    by_list = torch.argsort(flat, stable=True)
    lst = flat[by_list]
    bounds = torch.searchsorted(lst, torch.arange(C + 1, device=dev))
    counts = bounds[1:] - bounds[:-1]
    rank = torch.arange(P, device=dev) - bounds[lst]
    tiles = torch.div(counts + tile - 1, tile, rounding_mode="floor")
    first = torch.cumsum(tiles, 0) - tiles
    T = -(-P // tile) + min(C, P)
    at = (first[lst] + torch.div(rank, tile, rounding_mode="floor")) * tile + rank % tile
    query = torch.zeros(T * tile, dtype=torch.int64, device=dev)
    query.index_copy_(0, at, torch.div(by_list, p, rounding_mode="floor"))
    pair = torch.full((T * tile,), P, dtype=torch.int64, device=dev)
    pair.index_copy_(0, at, by_list)
    tile_of = torch.div(at, tile, rounding_mode="floor")
    tile_list = torch.zeros(T, dtype=torch.int64, device=dev).scatter_(0, tile_of, lst)
    used = torch.zeros(T, dtype=torch.bool, device=dev).scatter_(0, tile_of, True)
    start = offsets[tile_list]
    end = torch.where(used, offsets[tile_list + 1], start)
    return start, end, query, pair


def list_tile_topk_fits(
    hidden, rows, bias, members, offsets, lists, k, max_list, tie_by_row=False
) -> bool:
    """Whether k' = min(k, max_list) fits the kernel's registers (<= MAX_KEEP): ops'
    capacity rule (the twin runs otherwise)."""
    return min(int(k), int(max_list)) <= MAX_KEEP


def list_tile_topk(hidden, rows, bias, members, offsets, lists, k, max_list, tie_by_row=False):
    """(scores (N, p, k') float32, pos (N, p, k') int64), k' = min(k, max_list): the best
    members of every probed list as positions in the list, best first, ties by smaller
    position, (-inf, -1) in empty slots; the contract of list_tile_topk_ref.

    hidden: (N, d) float; rows: (m, d) float; bias: (m,) or None; members: (M,) int64 (or
    int32) row of each list position; offsets: (C + 1,) int64 CSR over members; lists: (N,
    p) int64; max_list: lists are read up to their first max_list members; tie_by_row: pos
    holds the member's row instead, ties by smaller row."""
    _utils.check_hidden_weight(hidden, rows)
    N, d = hidden.shape
    m = rows.shape[0]
    if bias is not None and bias.shape != (m,):
        raise ValueError(f"bias must be ({m},), got {tuple(bias.shape)}")
    if lists.dim() != 2 or lists.shape[0] != N:
        raise ValueError(f"lists must be ({N}, p), got {tuple(lists.shape)}")
    if members.dim() != 1 or offsets.dim() != 1 or offsets.shape[0] < 1:
        raise ValueError("members must be (M,) and offsets (C + 1,)")
    for name, t in (("members", members), ("offsets", offsets), ("lists", lists)):
        if t.dtype != torch.int64 and not (name == "members" and t.dtype == torch.int32):
            raise TypeError(f"{name} must be int64, got {t.dtype}")
    k, max_list = int(k), int(max_list)
    if k < 0 or max_list < 0:
        raise ValueError(f"k and max_list must be >= 0, got {k}, {max_list}")
    if max_list >= 2**31 or (tie_by_row and m >= 2**31):
        raise ValueError(f"max_list {max_list}, rows {m}: the packed tie must fit in 31 bits")
    _utils.check_devices(
        hidden.device, rows=rows, bias=bias, members=members, offsets=offsets, lists=lists
    )
    _utils.check_kernel_floats("list_tile_topk", hidden=hidden, rows=rows, bias=bias)
    p = lists.shape[1]
    k_out = min(k, max_list)
    if k_out > MAX_KEEP:
        raise ValueError(
            f"list_tile_topk keeps at most {MAX_KEEP} per list in registers, got k' = {k_out} "
            "(ops.list_tile_topk runs the PyTorch twin there: list_tile_topk_fits)"
        )
    P = N * p
    C = offsets.shape[0] - 1
    scores = _utils.empty((P + 1, k_out), torch.float32, hidden.device)  # row P: scratch
    pos = _utils.empty((P + 1, k_out), torch.int64, hidden.device)
    if P == 0 or k_out == 0 or C == 0 or members.numel() == 0:
        return (
            scores[:P].fill_(float("-inf")).view(N, p, k_out),
            pos[:P].fill_(-1).view(N, p, k_out),
        )
    members, offsets = members.contiguous(), offsets.contiguous()
    block_q = INTERPRET_BLOCK_Q if _utils.INTERPRET else BLOCK_Q
    start, end, query, pair = tile_schedule(lists, C, offsets, block_q)
    end = torch.minimum(end, start + max_list)  # a list's first max_list members
    half = hidden.dtype == rows.dtype and hidden.dtype in (torch.bfloat16, torch.float16)
    dot_dtype = tl.float32
    if half and not _utils.INTERPRET:  # the interpreter's bf16 tl.dot is wrong
        dot_dtype = tl.bfloat16 if hidden.dtype == torch.bfloat16 else tl.float16
    # the kept set is BLOCK_L wide, chunks as wide (the max merge needs equal widths)
    if _utils.INTERPRET:
        BLOCK_L, BLOCK_D = max(8, _utils.next_pow2(k_out)), max(8, min(_utils.next_pow2(d), 32))
    else:  # tl.dot's smallest N and K are 16
        BLOCK_L = max(16, _utils.next_pow2(max(k_out, min(64, max_list))))
        BLOCK_D = max(16, min(_utils.next_pow2(d), 64, _TILE // BLOCK_L))
    grid = (start.shape[0],)
    list_tile_topk_kernel[grid](
        hidden,
        rows,
        bias if bias is not None else rows,
        members,
        start,
        end,
        query,
        pair,
        scores,
        pos,
        d,
        k_out,
        hidden.stride(0),
        hidden.stride(1),
        rows.stride(0),
        rows.stride(1),
        bias.stride(0) if bias is not None else 0,
        scores.stride(0),
        pos.stride(0),
        HAS_BIAS=bias is not None,
        TIE_ROW=bool(tie_by_row),
        DOT_DTYPE=dot_dtype,
        INPUT_PRECISION="ieee" if dot_dtype == tl.float32 else "tf32",
        BLOCK_Q=block_q,
        BLOCK_L=BLOCK_L,
        BLOCK_D=BLOCK_D,
    )
    return scores[:P].view(N, p, k_out), pos[:P].view(N, p, k_out)
