"""Class-sharded (vocab-parallel) exact and sampled softmax over torch.distributed.

Layout. The n classes are split into contiguous shards, one per rank of the *class-parallel*
process group (the `group=` argument; the world group by default): rank r holds rows
[lo_r, hi_r) of W (and of b), n_r = hi_r - lo_r of them, possibly uneven (`shard_bounds`),
and its own candidate index over those rows (LSH tables from a shared seed, so the hyperplanes
are identical on every rank, or a FAISS index). Hidden states h (N, d) and targets y (N,) are
*replicated* across the group: every rank passes the same ones and gets the same loss back.

Full path (exact; the vocab-parallel cross-entropy of Megatron-LM, from first principles).
Each rank computes, over its own classes only and in chunks (memory O(N * chunk)):

    lse_r  = log sum_{j in shard r} exp(z_j)         local log-sum-exp       (N,)
    zt_r   = z_y if lo_r <= y < hi_r else 0          target logit, owner only (N,)
    zs_r   = sum_{j in shard r} z_j                  only with label smoothing (N,)

then two all-reduces give the global values on every rank:

    m   = all_reduce_max(lse_r)                                   N values
    [s, zt, zs] = all_reduce_sum([exp(lse_r - m), zt_r, zs_r])    2N (3N) values
    lse = m + log s;  loss = lse - (1 - eps) zt - eps/n zs

Backward is local: rank r writes dz_j = g (softmax_j - (1 - eps) 1[j = y] - eps/n) only for
its classes, so dW and db are its own rows; dh = sum_j dz_j W_j is a sum over shards, so the
per-shard partial dh is all-reduced (N d values) inside the autograd Function's backward.

Sampled paths. Rank r retrieves S_r from its own index (num_candidates - 1 ids per shard, so
for an exact index the union holds the global top-(num_candidates - 1)); the target joins
S on the rank that owns it; rank r draws |T_r| uniform samples from its shard minus S_r, with
|T_r| proportional to n_r (`uniform_split`, summing to num_uniform). Candidate j of rank r
gets log-weight log w_j: 0 on S_r and log((n_r - |S_r|) / |T_r|) on T_r. Then

    Z-hat   = sum_r Z-hat_r
    Z-hat_r = sum_{j in S_r} e^{z_j} + (n_r - |S_r|) / |T_r| sum_{j in T_r} e^{z_j}

is combined exactly like the full path (all-reduce max of log Z-hat_r, all-reduce sum of
exp(log Z-hat_r - m) and of the owner's target logit). Why this is the right estimator: with
S = union of the S_r, the complement [0, n) minus S is the disjoint union of the strata
shard_r minus S_r, of sizes n_r - |S_r|. Each stratum term (n_r - |S_r|)/|T_r| sum_{T_r} e^z
is an unbiased estimate of that stratum's sum (T_r uniform with replacement on the stratum),
so their sum is an unbiased estimate of sum_{j not in S} e^{z_j}: stratified sampling of T.
With |T_r| proportional to the stratum sizes its variance is at most that of one uniform
draw of |T| from the whole complement (the classical proportional-allocation result; here the
allocation is proportional to n_r, which matches n_r - |S_r| up to |S_r| / n_r).

"Equals the single-process estimator on the same candidate set" means precisely: concatenate
every rank's candidate row, ids shifted to global (lo_r + c), each with the log-weight that
rank gave it (padding -inf); the sharded per-row loss equals the twin
`sampled_logits_fwd_ref(h, W, b, union_ids, union_logw, y)` (reference/sampled_logits.py)
on the full W, and
its gradients (dh; dW and db restricted to rank r's rows) equal those of
`autograd.SampledSoftmaxFunction` on the same inputs, up to floating-point summation order.
It is *not* the single-device module's estimator with one weight (n - |S|)/|T| on all of T:
that is the unstratified estimator of the same quantity, a different random variable.

Cost per training step, both paths: forward all-reduces of N and 2N (3N with label smoothing)
accumulation-dtype values, backward one of N d; nothing else, and no host synchronisation
beyond what the collectives themselves imply. The refresh of the indexes runs on every rank
at the same step (a step counter and `refresh_every`, identical on every rank), with no
communication.

Composing with data parallelism (world = DP x CP ranks). Make one class-parallel group per
data-parallel replica and pass it as `group=`; make one data-parallel group per shard index
(the ranks holding the same shard in different replicas). Within a class-parallel group,
hidden and targets are the same (the replica's batch); across replicas they differ. After
backward, average the shard's gradients (weight, bias) over its data-parallel group, e.g.
DistributedDataParallel(module, process_group=dp_group) or all_reduce on dp_group; parameters
below the output layer are replicated in the class-parallel group and get identical gradients
there (dh is all-reduced), so they are averaged over the data-parallel group as usual.
For example with world 4 = 2 DP x 2 CP (every rank must call new_group for every group):

    cp_groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    dp_groups = [dist.new_group([0, 2]), dist.new_group([1, 3])]
    cp, dp = cp_groups[rank // 2], dp_groups[rank % 2]
    loss_layer = ShardedSampledSoftmaxLoss(n, d, group=cp, method="lsh")

Every rank of the class-parallel group must call forward and backward together (each holds
collectives), with the same method, options and batch shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from . import checks, ops
from .autograd import candidate_weight_grads
from .candidates import build_candidates
from .functional import _reduce, valid_rows
from .reference.sampled_logits import acc_dtype

__all__ = [
    "CommCounter",
    "ShardedCrossEntropyFunction",
    "ShardedSampledSoftmaxFunction",
    "build_shard_candidates",
    "check_bounds",
    "init_shard_rows",
    "shard_bounds",
    "sharded_cross_entropy",
    "sharded_sampled_softmax_from_candidates",
    "uniform_split",
]

Bounds = list[tuple[int, int]]


# ---- shards --------------------------------------------------------------------------------
def shard_bounds(n: int, world_size: int) -> Bounds:
    """Contiguous shards [lo_r, hi_r) of n classes over world_size ranks, sizes differing by 1.

    The first n % world_size ranks get one class more (n=10, 3 ranks: [0,4) [4,7) [7,10)).
    """
    checks.check_int_option("world_size", world_size, 1)
    checks.check_int_option("num_classes", n, world_size)
    base, extra = divmod(n, world_size)
    bounds, lo = [], 0
    for r in range(world_size):
        hi = lo + base + (1 if r < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def check_bounds(bounds, n: int, world_size: int) -> Bounds:
    """Validate explicit shard bounds: world_size non-empty contiguous shards covering [0, n)."""
    bounds = [(int(lo), int(hi)) for lo, hi in bounds]
    if len(bounds) != world_size:
        raise ValueError(f"need one shard per rank: {len(bounds)} bounds for {world_size} ranks")
    prev = 0
    for r, (lo, hi) in enumerate(bounds):
        if lo != prev or hi <= lo:
            raise ValueError(
                f"shard bounds must be contiguous, non-empty and start at 0: rank {r} has "
                f"[{lo}, {hi}) after {prev}"
            )
        prev = hi
    if prev != n:
        raise ValueError(f"shard bounds end at {prev} but num_classes={n}")
    return bounds


def uniform_split(num_uniform: int, bounds: Bounds) -> list[int]:
    """|T_r| per shard: num_uniform apportioned in proportion to n_r (largest remainder).

    Every shard gets at least one sample when num_uniform >= the number of shards (taken from
    the largest quota), so no stratum goes unsampled; the result is the same on every rank.
    """
    checks.check_int_option("num_uniform (|T|)", num_uniform, 0)
    sizes = [hi - lo for lo, hi in bounds]
    n, R = sum(sizes), len(sizes)
    if num_uniform == 0:
        return [0] * R
    if num_uniform < R:
        raise ValueError(
            f"num_uniform={num_uniform} is less than the {R} shards: every shard needs at least "
            "one uniform sample for the estimator to be unbiased (or use num_uniform=0)"
        )
    exact = [num_uniform * s / n for s in sizes]
    quota = [math.floor(e) for e in exact]
    by_remainder = sorted(range(R), key=lambda r: (-(exact[r] - quota[r]), r))
    for r in by_remainder[: num_uniform - sum(quota)]:
        quota[r] += 1
    for r in range(R):
        if quota[r] == 0:
            donor = max(range(R), key=lambda k: (quota[k], -k))
            quota[donor] -= 1
            quota[r] += 1
    return quota


def _group_rank_world(group) -> tuple[int, int]:
    """(rank in group, group size); (0, 1) when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        if group is not None:
            raise RuntimeError("a process group was given but torch.distributed is not initialised")
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


# ---- communication ---------------------------------------------------------------------------
@dataclass
class CommCounter:
    """Collectives issued and their payload, counted from the tensors' sizes (no sync).

    bytes is the payload each rank contributes (numel * element size per all-reduce); a ring
    all-reduce moves about 2 (R - 1) / R times that over each rank's link.
    """

    calls: int = 0
    bytes: int = 0
    by_op: dict = field(default_factory=dict)

    def record(self, name: str, t: torch.Tensor) -> None:
        nbytes = t.numel() * t.element_size()
        self.calls += 1
        self.bytes += nbytes
        self.by_op[name] = self.by_op.get(name, 0) + nbytes

    def reset(self) -> None:
        self.calls, self.bytes, self.by_op = 0, 0, {}


def _all_reduce(t: torch.Tensor, op, group, comm: CommCounter | None, name: str) -> torch.Tensor:
    """In-place all_reduce over `group`; a no-op without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        if comm is not None:
            comm.record(name, t)
        dist.all_reduce(t, op=op, group=group)
    return t


def _combine(lse_r, extra_sums, group, comm):
    """Global log-sum-exp from per-rank ones, and the all-reduced sums of `extra_sums` rows.

    lse_r: (N,) local log-sum-exp (-inf where a rank has no term); extra_sums: list of (N,).
    """
    m = _all_reduce(lse_r.clone(), dist.ReduceOp.MAX, group, comm, "max")
    # every row has a finite term on some rank (the target's owner), so m is finite
    packed = torch.stack([torch.exp(lse_r - m), *extra_sums])
    _all_reduce(packed, dist.ReduceOp.SUM, group, comm, "sum")
    return m + torch.log(packed[0]), packed[1:]


def _local_target(target: torch.Tensor, lo: int, n_local: int):
    """(owned (N,) bool, local target clamped into [0, n_local) (N,) int64)."""
    local = target.long() - lo
    owned = (local >= 0) & (local < n_local)
    return owned, local.clamp(0, n_local - 1)


def _target_logit(hidden, weight, bias, t_local, owned, acc):
    z = (weight[t_local].to(acc) * hidden.to(acc)).sum(1)
    if bias is not None:
        z = z + bias[t_local].to(acc)
    return torch.where(owned, z, torch.zeros_like(z))


# ---- full path -------------------------------------------------------------------------------
class ShardedCrossEntropyFunction(torch.autograd.Function):
    """Exact per-example cross-entropy (N,) over all n classes, W sharded over `group`.

    hidden (N, d) replicated; weight (n_r, d) and bias (n_r,) | None: this rank's rows
    [lo, lo + n_r); target (N,) int64 global ids in [0, n). The local forward and backward
    are ops.linear_ce_fwd / ops.linear_ce_bwd on the shard (chunked, Triton where routed)
    with the target clamped into the shard; the backward then puts right the two things the
    shard-local call cannot know, both O(N d + n_r d):
      - rows whose target is not in this shard: chunked_ce_bwd subtracted g at the clamped
        column; add it back (a = g);
      - label smoothing: the single-device call would use eps/n_r; here rows owned get
        (1 - eps) at the target, and every class -eps/n with the global n.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, lo, num_classes, label_smoothing, group, comm):
        n_local = weight.shape[0]
        acc = acc_dtype(hidden.dtype)
        owned, t_local = _local_target(target, lo, n_local)
        _, lse_r = ops.linear_ce_fwd(hidden, weight, bias, t_local, 0.0)
        zt_r = _target_logit(hidden, weight, bias, t_local, owned, acc)
        extra = [zt_r]
        if label_smoothing:
            zs_r = hidden.to(acc) @ weight.to(acc).sum(0)
            if bias is not None:
                zs_r = zs_r + bias.to(acc).sum()
            extra.append(zs_r)
        lse, sums = _combine(lse_r.to(acc), extra, group, comm)
        loss = lse - (1.0 - label_smoothing) * sums[0]
        if label_smoothing:
            loss = loss - label_smoothing / num_classes * sums[1]
        ctx.save_for_backward(hidden, weight, bias, t_local, owned, lse)
        ctx.num_classes, ctx.label_smoothing = num_classes, label_smoothing
        ctx.group, ctx.comm = group, comm
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, bias, t_local, owned, lse = ctx.saved_tensors
        eps, n = ctx.label_smoothing, ctx.num_classes
        acc = lse.dtype
        g = grad_loss.to(acc)
        h = hidden.to(acc)
        dh, dW, db = ops.linear_ce_bwd(grad_loss, hidden, weight, bias, t_local, lse, 0.0)
        dh, dW = dh.to(acc), dW.to(acc)
        # dz_true - dz_local = a 1[j = t_local] - eps/n g   (see the class docstring)
        a = g * (1.0 - (1.0 - eps) * owned.to(acc))
        dh = dh + a.unsqueeze(1) * weight[t_local].to(acc)
        dW.index_add_(0, t_local, a.unsqueeze(1) * h)
        if db is not None:
            db = db.to(acc).index_add_(0, t_local, a)
        if eps:
            c = -eps / n * g
            dh = dh + c.unsqueeze(1) * weight.to(acc).sum(0)
            dW += (c @ h).unsqueeze(0)
            if db is not None:
                db += c.sum()
        grad_h = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            _all_reduce(dh, dist.ReduceOp.SUM, ctx.group, ctx.comm, "sum_dh")
            grad_h = dh.to(hidden.dtype)
        if ctx.needs_input_grad[1]:
            grad_w = dW.to(weight.dtype)
        if bias is not None and ctx.needs_input_grad[2]:
            grad_b = db.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None


def sharded_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    shard: tuple[int, int],
    num_classes: int,
    group=None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    comm: CommCounter | None = None,
) -> torch.Tensor:
    """Exact softmax cross-entropy with the classes sharded over `group` (every rank calls it).

    hidden: (N, d) float, the same on every rank; weight: (n_r, d) this rank's rows
    shard = (lo, hi) of the num_classes; bias: (n_r,) or None; target: (N,) int64 global ids
    (or ignore_index), the same on every rank. Returns the same 0-d loss (or (N,) for
    reduction="none") on every rank, in the accumulation dtype; semantics of
    torch.nn.functional.cross_entropy. Inputs are validated for shape only.
    """
    lo, hi = shard
    N, n_local, _ = checks.check_loss_inputs(hidden, weight, target, bias)
    if n_local != hi - lo:
        raise ValueError(f"weight has {n_local} rows but the shard is [{lo}, {hi})")
    checks.check_reduction(reduction)
    row_valid, safe_target = valid_rows(target, ignore_index)
    loss_rows = ShardedCrossEntropyFunction.apply(
        hidden, weight, bias, safe_target, lo, num_classes, float(label_smoothing), group, comm
    )
    return _reduce(loss_rows, row_valid, reduction)


# ---- sampled paths ---------------------------------------------------------------------------
def build_shard_candidates(
    retrieved: torch.Tensor,
    target: torch.Tensor,
    shard: tuple[int, int],
    num_uniform: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One rank's candidate rows: (cand_ids (N, R + 1 + T_r) local int64, cand_logw float32).

    retrieved: (N, R) local ids in [0, n_r) from this rank's index, -1 for empty slots;
    target: (N,) global ids; shard = (lo, hi); num_uniform: this rank's |T_r|.
    Layout as candidates.build_candidates: [ S_r (deduped) | target column | T_r ], weight 1
    on S_r (log 0), (n_r - |S_r|) / |T_r| on T_r, -inf for padding. The target column is
    valid only on rows whose target lies in the shard (it joins S on its owner only); T_r is
    drawn uniformly with replacement from the shard minus S_r.
    """
    lo, hi = shard
    owned, t_local = _local_target(target, lo, hi - lo)
    return build_candidates(retrieved, t_local, hi - lo, num_uniform, generator, owned)


class ShardedSampledSoftmaxFunction(torch.autograd.Function):
    """Per-example sampled-softmax loss (N,) with candidates spread over the ranks of `group`.

    hidden (N, d) replicated; weight (n_r, d), bias (n_r,) | None: this rank's rows from lo;
    cand_ids (N, M_r) local ids, cand_logw (N, M_r) float32 log-weights (-inf = padding), as
    from build_shard_candidates; target (N,) global ids. Local work is ops.sampled_logits_fwd
    / ops.sampled_logits_coef on the shard with the target clamped into it; the target's
    coefficient (-g) is kept only on the rank that owns it. Backward writes only the
    candidate rows of this shard (dense or sparse COO, as SampledSoftmaxFunction).
    """

    @staticmethod
    def forward(
        ctx,
        hidden,
        weight,
        bias,
        cand_ids,
        cand_logw,
        target,
        lo,
        group,
        sparse_grad,
        deterministic,
        comm,
    ):
        acc = acc_dtype(hidden.dtype)
        owned, t_local = _local_target(target, lo, weight.shape[0])
        _, lse_r = ops.sampled_logits_fwd(hidden, weight, bias, cand_ids, cand_logw, t_local)
        zt_r = _target_logit(hidden, weight, bias, t_local, owned, acc)
        lse, sums = _combine(lse_r.to(acc), [zt_r], group, comm)
        ctx.save_for_backward(hidden, weight, bias, cand_ids, cand_logw, t_local, owned, lse)
        ctx.sparse_grad, ctx.deterministic, ctx.group, ctx.comm = (
            sparse_grad,
            deterministic,
            group,
            comm,
        )
        return lse - sums[0]

    @staticmethod
    def backward(ctx, grad_loss):
        hidden, weight, bias, cand_ids, cand_logw, t_local, owned, lse = ctx.saved_tensors
        n_local = weight.shape[0]
        coef, ids = ops.sampled_logits_coef(
            grad_loss, hidden, weight, bias, cand_ids, cand_logw, t_local, lse
        )
        # coef = [g p | -g] over ids = [candidates | target]: the -g belongs to the owner only
        coef = torch.cat([coef[:, :-1], torch.where(owned, coef[:, -1], 0.0).unsqueeze(1)], 1)
        grad_h = None
        if ctx.needs_input_grad[0]:
            dh = ops.grad_hidden(coef, ids, weight).to(coef.dtype)
            _all_reduce(dh, dist.ReduceOp.SUM, ctx.group, ctx.comm, "sum_dh")
            grad_h = dh.to(hidden.dtype)
        grad_w, grad_b = candidate_weight_grads(ctx, coef, ids, hidden, weight, bias, n_local)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None, None, None


def sharded_sampled_softmax_from_candidates(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    cand_ids: torch.Tensor,
    cand_logw: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    shard: tuple[int, int],
    group=None,
    reduction: str = "mean",
    ignore_index: int = -100,
    sparse_grad: bool = False,
    deterministic: bool = False,
    comm: CommCounter | None = None,
) -> torch.Tensor:
    """The sharded estimator loss for this rank's candidates (every rank of `group` calls it).

    hidden (N, d) and target (N,) global ids (or ignore_index): the same on every rank;
    weight (n_r, d), bias (n_r,) | None: rows shard = (lo, hi); cand_ids / cand_logw
    (N, M_r): this rank's local candidates and log-weights (build_shard_candidates; the
    owner's row must hold the target for it to be in S). Returns the same loss on every rank.
    """
    lo, hi = shard
    N, n_local, _ = checks.check_loss_inputs(hidden, weight, target, bias)
    if n_local != hi - lo:
        raise ValueError(f"weight has {n_local} rows but the shard is [{lo}, {hi})")
    if cand_ids.shape != cand_logw.shape or cand_ids.dim() != 2 or cand_ids.shape[0] != N:
        raise ValueError(
            f"cand_ids {tuple(cand_ids.shape)} and cand_logw {tuple(cand_logw.shape)} must "
            f"both be (N={N}, M)"
        )
    checks.check_reduction(reduction)
    row_valid, safe_target = valid_rows(target, ignore_index)
    loss_rows = ShardedSampledSoftmaxFunction.apply(
        hidden,
        weight,
        bias,
        cand_ids.long(),
        cand_logw,
        safe_target,
        lo,
        group,
        sparse_grad,
        deterministic,
        comm,
    )
    return _reduce(loss_rows, row_valid, reduction)


# ---- module ----------------------------------------------------------------------------------
def init_shard_rows(
    lo: int, hi: int, dim: int, seed: int, device=None, dtype=None, block: int = 1 << 16
) -> torch.Tensor:
    """Rows [lo, hi) of a U(-1/sqrt(d), 1/sqrt(d)) weight fixed by seed, whatever the sharding.

    Drawn in blocks of `block` rows, each from its own generator, so a rank materialises only
    its shard and any world size (or a reshard) sees the same full matrix.
    """
    bound = 1.0 / math.sqrt(dim)
    out = torch.empty(hi - lo, dim, dtype=torch.float32)
    for b in range(lo // block, (hi - 1) // block + 1 if hi > lo else lo // block):
        b_lo, b_hi = b * block, (b + 1) * block
        gen = torch.Generator().manual_seed(seed * 1_000_003 + b)
        rows = torch.empty(block, dim).uniform_(-bound, bound, generator=gen)
        s, e = max(lo, b_lo), min(hi, b_hi)
        out[s - lo : e - lo] = rows[s - b_lo : e - b_lo]
    return out.to(device=device, dtype=dtype or torch.get_default_dtype())
