"""From retrieved classes to the estimator's candidate set: S (deduped, target added) + uniform T.

Every example gets a fixed-width row of candidates, so nothing downstream is ragged:

    cand_ids  (N, R + 1 + T) int64   [ retrieved S (R, deduped) | target | T uniform draws ]
    cand_logw (N, R + 1 + T) float32 log of the estimator weight; -inf marks padding
                                     (logw_dtype=torch.float64 for float64 inputs)

with weight 1 on S and (n - |S_i|) / |T| on T, where |S_i| counts the valid entries of S for
example i (the target included). T is drawn uniformly *with replacement* from the classes not
in S_i, which keeps the estimator of the partition function unbiased:

    E[(n - |S|) / |T| * sum_{j in T} e^{z_j}] = sum_{j not in S} e^{z_j}.

Sampling from the complement needs no rejection loop: with S_i sorted as s_0 < s_1 < ...,
the u-th class outside S_i (u uniform in [0, n - |S_i|)) is u + #{k : s_k - k <= u}, one
batched searchsorted.
"""

from __future__ import annotations

import math

import torch


def first_occurrences(ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Return a validity mask with only the first occurrence of each id per row kept.

    ids: (N, R) int64; valid: (N, R) bool. Order of the row is not changed.
    """
    if ids.shape[1] <= 1:
        return valid
    big = torch.iinfo(torch.int64).max
    keyed = torch.where(valid, ids, torch.full_like(ids, big))
    sorted_ids, order = torch.sort(keyed, dim=1, stable=True)
    dup_sorted = torch.zeros_like(valid)
    dup_sorted[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
    dup = torch.zeros_like(valid).scatter_(1, order, dup_sorted)
    return valid & ~dup


def sample_complement(
    members: torch.Tensor,
    member_valid: torch.Tensor,
    n: int,
    num_samples: int,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw num_samples classes per row, uniformly with replacement, from [0, n) minus its members.

    members: (N, R) int64 distinct per row where valid; member_valid: (N, R) bool.
    Returns (samples (N, num_samples) int64, complement_size (N,) int64). Rows whose members
    cover all n classes get complement_size 0 and samples 0 (the caller masks them).
    """
    N = members.shape[0]
    device = members.device
    comp = n - member_valid.sum(dim=1)  # (N,)
    if num_samples == 0:
        return torch.zeros(N, 0, dtype=torch.int64, device=device), comp
    # Uniform u in [0, comp) per row, drawn as floor(U * comp) from one float64 uniform tensor.
    unif = torch.rand(N, num_samples, generator=generator, device=device, dtype=torch.float64)
    u = (unif * comp.clamp(min=1).unsqueeze(1).double()).long()
    u = torch.minimum(u, (comp - 1).clamp(min=0).unsqueeze(1))
    sentinel = torch.full_like(members, n)
    s_sorted, _ = torch.sort(torch.where(member_valid, members, sentinel), dim=1)
    rank = torch.arange(members.shape[1], device=device).unsqueeze(0)
    shifted = torch.where(s_sorted < n, s_sorted - rank, torch.full_like(s_sorted, n))
    count = torch.searchsorted(shifted.contiguous(), u.contiguous(), right=True)
    samples = u + count
    samples = torch.where(comp.unsqueeze(1) > 0, samples, torch.zeros_like(samples))
    return samples, comp


def build_candidates(
    retrieved: torch.Tensor,
    target: torch.Tensor,
    n: int,
    num_uniform: int,
    generator: torch.Generator | None = None,
    target_valid: torch.Tensor | None = None,
    logw_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assemble (cand_ids, cand_logw) from retrieved ids; see the module docstring.

    retrieved: (N, R) int64, -1 (or any id outside [0, n)) marks an empty slot.
    target: (N,) int64 in [0, n) (rows the caller ignores may hold any valid id, e.g. 0).
    target_valid: (N,) bool, rows whose target joins S (default all); elsewhere the target
    column is padding (a class shard that does not own the row's target).
    """
    N = retrieved.shape[0]
    device = retrieved.device
    s_ids, s_valid = _prepare_s(retrieved, target, n, target_valid)
    t_ids, comp = sample_complement(s_ids, s_valid, n, num_uniform, generator)
    zero = torch.zeros((), dtype=logw_dtype, device=device)
    ninf = torch.full((), float("-inf"), dtype=logw_dtype, device=device)
    s_logw = torch.where(s_valid, zero, ninf)
    if num_uniform:
        t_logw = torch.log(comp.to(logw_dtype) / num_uniform).unsqueeze(1).expand(N, num_uniform)
        t_ids = torch.where(comp.unsqueeze(1) > 0, t_ids, s_ids[:, -1:])
        cand_ids = torch.cat([s_ids, t_ids], dim=1)
        cand_logw = torch.cat([s_logw, t_logw], dim=1)
    else:
        cand_ids, cand_logw = s_ids, s_logw
    return cand_ids.contiguous(), cand_logw.contiguous()


def _prepare_s(
    retrieved: torch.Tensor, target: torch.Tensor, n: int, target_valid: torch.Tensor | None = None
):
    """S per example: deduped retrieved ids, the target appended (valid where target_valid);
    padding points at the target, a real row."""
    N = retrieved.shape[0]
    retrieved = retrieved.long()
    target = target.long().unsqueeze(1)
    if target_valid is None:
        target_valid = torch.ones(N, dtype=torch.bool, device=retrieved.device)
    tv = target_valid.unsqueeze(1)
    valid = (retrieved >= 0) & (retrieved < n) & ~(tv & (retrieved == target))
    valid = first_occurrences(retrieved, valid)
    s_ids = torch.cat([torch.where(valid, retrieved, target), target], 1)
    return s_ids, torch.cat([valid, tv], 1)


def _in_rows(
    members: torch.Tensor, member_valid: torch.Tensor, queries: torch.Tensor
) -> torch.Tensor:
    """(N, Q) bool: is queries[i, q] among the valid members[i, :]?  (sort + searchsorted)"""
    if members.shape[1] <= 4:  # e.g. S = {target}: a broadcast compare beats a batched search
        eq = queries.unsqueeze(2) == members.unsqueeze(1)
        return (eq & member_valid.unsqueeze(1)).any(2)
    big = torch.iinfo(torch.int64).max
    s_sorted, _ = torch.sort(torch.where(member_valid, members, torch.full_like(members, big)), 1)
    pos = torch.searchsorted(s_sorted, queries.contiguous()).clamp_max(s_sorted.shape[1] - 1)
    return torch.gather(s_sorted, 1, pos) == queries


def _shared_hits(
    members: torch.Tensor, member_valid: torch.Tensor, shared: torch.Tensor
) -> torch.Tensor:
    """(N, M) bool: is shared[m] among the valid members[i, :]? (_in_rows for one query row
    shared by the batch: each member is searched in the M sorted shared ids, N x R searches,
    not N x M; every copy of a repeated shared id gets the same answer)."""
    N = members.shape[0]
    uniq, inv = torch.unique(shared, return_inverse=True)  # sorted
    if uniq.numel() == 0:
        return torch.zeros(N, shared.numel(), dtype=torch.bool, device=shared.device)
    pos = torch.searchsorted(uniq, members.contiguous()).clamp_max(uniq.numel() - 1)
    found = (uniq[pos] == members) & member_valid
    hit = torch.zeros(N, uniq.numel() + 1, dtype=torch.bool, device=shared.device)
    hit.scatter_(1, torch.where(found, pos, uniq.numel()), True)  # misses: the spare column
    return hit.gather(1, inv.expand(N, -1))


def _hit_logw(t_logw: torch.Tensor, hit: torch.Tensor, remove_accidental_hits: bool):
    if not remove_accidental_hits:
        return t_logw
    return torch.where(hit, torch.full_like(t_logw, float("-inf")), t_logw)


def build_candidates_q(
    retrieved: torch.Tensor,
    target: torch.Tensor,
    n: int,
    num_samples: int,
    sampler,
    generator: torch.Generator | None = None,
    remove_accidental_hits: bool = True,
    logw_dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example S + T drawn i.i.d. from a proposal q, log-Q corrected (see samplers.py).

    Same layout as build_candidates: (cand_ids (N, R+1+T), cand_logw (N, R+1+T)).
    """
    s_ids, s_valid = _prepare_s(retrieved, target, n)
    N = s_ids.shape[0]
    zero = torch.zeros((), dtype=logw_dtype, device=s_ids.device)
    s_logw = torch.where(s_valid, zero, torch.full_like(zero, float("-inf")))
    t_ids = sampler.sample((N, num_samples), generator=generator, device=s_ids.device)
    t_logw = sampler.log_q(t_ids).to(logw_dtype).neg() - math.log(max(num_samples, 1))
    t_logw = _hit_logw(t_logw, _in_rows(s_ids, s_valid, t_ids), remove_accidental_hits)
    return torch.cat([s_ids, t_ids], 1).contiguous(), torch.cat([s_logw, t_logw], 1).contiguous()


def build_shared_candidates(
    retrieved: torch.Tensor,
    target: torch.Tensor,
    n: int,
    num_samples: int,
    sampler,
    generator: torch.Generator | None = None,
    union: bool = False,
    remove_accidental_hits: bool = True,
    logw_dtype: torch.dtype = torch.float32,
    num_own: int = 0,
    head: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates shared by the whole batch, scored as one dense (N, M) product.

    union=False ("shared_samples"): per-example S (gathered) + one T of num_samples draws
      from q shared by every row, log-weight -log|T| - log q(t), hits in S_i removed.
    num_own > 0 ("hybrid", uniform q only): each row also draws its own num_own classes
      uniformly from outside S_i (gathered after S, as the per-example scheme does). Both
      parts estimate the same sum over the complement of S_i, so any convex mix of them is
      unbiased; the mix alpha = M / (M + num_own) on the shared part gives every draw the
      same weight, n / (M + num_own) (shared) and (n - |S_i|) / (M + num_own) (own).
    head (K,) int64 ("shared_samples" with num_head; q then excludes the head): K classes
      scored exactly (log-weight 0) for every row, placed before T; those in S_i get weight 0
      whatever remove_accidental_hits says (S_i already counts them once).
    union=True ("batch_union"): S_i = U, the union of every row's S and every target (fixed
      size N (R+1) with duplicates masked, no host sync), + the shared T, hits in U removed.
    Returns (s_ids (N, R'), s_logw (N, R'), shared_ids (M,), shared_logw (N, M)); for the
    union scheme R' = 1: the target with weight 0 (it is counted in U).
    """
    s_ids, s_valid = _prepare_s(retrieved, target, n)
    N, device = s_ids.shape[0], s_ids.device
    t_ids = sampler.sample((num_samples,), generator=generator, device=device)
    t_logw = sampler.log_q(t_ids).to(logw_dtype).neg() - math.log(max(num_samples, 1))
    t_logw = t_logw.expand(N, -1)
    ninf = torch.full((), float("-inf"), dtype=logw_dtype, device=device)
    zero = torch.zeros((), dtype=logw_dtype, device=device)
    if not union:
        s_logw = torch.where(s_valid, zero, ninf)
        if head is not None:  # exact head first: the hits of both parts in one search
            hit = _shared_hits(s_ids, s_valid, torch.cat([head, t_ids]))
            head_logw = torch.where(hit[:, : head.numel()], ninf, zero)
            t_logw = _hit_logw(t_logw, hit[:, head.numel() :], remove_accidental_hits)
            return s_ids, s_logw, torch.cat([head, t_ids]), torch.cat([head_logw, t_logw], 1)
        hit = _shared_hits(s_ids, s_valid, t_ids)
        if num_own:
            own, comp = sample_complement(s_ids, s_valid, n, num_own, generator)
            total = num_samples + num_own
            own_logw = torch.log(comp.to(logw_dtype) / total).unsqueeze(1).expand(-1, num_own)
            own_logw = torch.where(comp.unsqueeze(1) > 0, own_logw, ninf)
            s_ids = torch.cat([s_ids, own], 1)
            s_logw = torch.cat([s_logw, own_logw], 1)
            t_logw = t_logw + math.log(max(num_samples, 1) / total)  # alpha = M / total
        return s_ids, s_logw, t_ids, _hit_logw(t_logw, hit, remove_accidental_hits)
    u_ids = s_ids.reshape(1, -1)
    u_valid = first_occurrences(u_ids, s_valid.reshape(1, -1))
    hit = _in_rows(u_ids, u_valid, t_ids.unsqueeze(0)).expand(N, -1)
    u_logw = torch.where(u_valid, zero, ninf).expand(N, -1)
    shared_ids = torch.cat([u_ids[0], t_ids])
    shared_logw = torch.cat([u_logw, _hit_logw(t_logw, hit, remove_accidental_hits)], 1)
    # no per-example part: one masked slot (the target, weight 0) keeps the shapes non-empty
    t_col = target.long().unsqueeze(1)
    t_logw = torch.full((N, 1), float("-inf"), dtype=logw_dtype, device=device)
    return t_col, t_logw, shared_ids.contiguous(), shared_logw.contiguous()
