"""From retrieved classes to the estimator's candidate set: S (deduped, target added) + uniform T.

Every example gets a fixed-width row of candidates, so nothing downstream is ragged:

    cand_ids  (N, R + 1 + T) int64   [ retrieved S (R, deduped) | target | T uniform draws ]
    cand_logw (N, R + 1 + T) float32 log of the estimator weight; -inf marks padding

with weight 1 on S and (n - |S_i|) / |T| on T, where |S_i| counts the valid entries of S for
example i (the target included). T is drawn uniformly *with replacement* from the classes not
in S_i, which keeps the estimator of the partition function unbiased:

    E[(n - |S|) / |T| * sum_{j in T} e^{z_j}] = sum_{j not in S} e^{z_j}.

Sampling from the complement needs no rejection loop: with S_i sorted as s_0 < s_1 < ...,
the u-th class outside S_i (u uniform in [0, n - |S_i|)) is u + #{k : s_k - k <= u}, one
batched searchsorted.
"""

from __future__ import annotations

import torch


def dedupe_rows(ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
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
    """Draw num_samples classes per row uniformly (with replacement) from [0, n) minus the row's members.

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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Assemble (cand_ids, cand_logw) from retrieved ids; see the module docstring.

    retrieved: (N, R) int64, -1 (or any id outside [0, n)) marks an empty slot.
    target: (N,) int64 in [0, n) (rows the caller ignores may hold any valid id, e.g. 0).
    """
    N, R = retrieved.shape
    device = retrieved.device
    retrieved = retrieved.long()
    target = target.long()
    valid = (retrieved >= 0) & (retrieved < n) & (retrieved != target.unsqueeze(1))
    valid = dedupe_rows(retrieved, valid)
    s_ids = torch.where(valid, retrieved, target.unsqueeze(1))  # padding points at the target
    s_ids = torch.cat([s_ids, target.unsqueeze(1)], dim=1)
    s_valid = torch.cat([valid, torch.ones(N, 1, dtype=torch.bool, device=device)], dim=1)
    t_ids, comp = sample_complement(s_ids, s_valid, n, num_uniform, generator)
    zero = torch.zeros((), dtype=torch.float32, device=device)
    ninf = torch.full((), float("-inf"), dtype=torch.float32, device=device)
    s_logw = torch.where(s_valid, zero, ninf)
    if num_uniform:
        t_logw = torch.log(comp.float() / num_uniform).unsqueeze(1).expand(N, num_uniform)
        t_ids = torch.where(comp.unsqueeze(1) > 0, t_ids, target.unsqueeze(1))
        cand_ids = torch.cat([s_ids, t_ids], dim=1)
        cand_logw = torch.cat([s_logw, t_logw], dim=1)
    else:
        cand_ids, cand_logw = s_ids, s_logw
    return cand_ids.contiguous(), cand_logw.contiguous()


def all_classes_candidates(N: int, n: int, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The degenerate candidate set S = all classes (the estimator is then the exact loss)."""
    ids = torch.arange(n, device=target.device).unsqueeze(0).expand(N, n).contiguous()
    return ids, torch.zeros(N, n, dtype=torch.float32, device=target.device)
