"""Captured softmax mass: how much of the exact softmax a candidate set holds.

For a query row with target y and candidate ids S, the captured mass is

    sum_{j in S, j != y} p_j / sum_{j != y} p_j,   p = softmax(h W^T + b)  (exact)

the share of the non-target mass the sampled estimator sees exactly; the uniform T estimates
the rest, so the estimator's variance grows with 1 - mass. Used by bench/candidates.py (the
frontier) and, at index refreshes, by quality.py (target_mass, method="auto").

`tune_probes` widens a generator's probes on a doubling ladder (1, 2, 4, ... up to all lists)
until the mean mass on a probe batch meets a target: ClusterIndex (nprobe) and an IVF
FaissIndex on the CPU (nprobe); other generators are measured, not tuned.
"""

from __future__ import annotations

import torch

from ..reference.sampled_logits import row_dots
from .clusters import ClusterIndex
from .faiss import FaissIndex
from .rerank import dedupe_rows

CLASS_CHUNK = 1 << 16  # classes per block of the exact pass


def _logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    z = h @ w.float().T
    if b is not None:
        z = z + b.float()
    return torch.nan_to_num(z, nan=float("-inf"))  # a NaN row is no mass, not a NaN total


@torch.no_grad()
def lse_without_target(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    chunk: int = CLASS_CHUNK,
    top: int = 0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """(N,) float32: log sum_{j != y} exp(z_j), the exact pass over all n classes in blocks
    of `chunk` classes. hidden (N, d); weight (n, d); bias (n,) or None; target (N,) int64.

    top > 0: also the mass ceiling (N,) float32, the captured mass of the exact top-`top`
    non-target classes: what the best possible S of that size would capture."""
    h = hidden.detach().float()
    parts, best = [], h.new_empty(h.shape[0], 0)
    for lo in range(0, weight.shape[0], chunk):
        hi = min(weight.shape[0], lo + chunk)
        z = _logits(h, weight[lo:hi].detach(), None if bias is None else bias[lo:hi].detach())
        mine = (target >= lo) & (target < hi)
        col = (target - lo).clamp(0, hi - lo - 1).unsqueeze(1)
        z.scatter_(1, col, torch.where(mine.unsqueeze(1), float("-inf"), z.gather(1, col)))
        parts.append(torch.logsumexp(z, dim=1))
        if top:
            both = torch.cat([best, z], dim=1)
            best = both.topk(min(top, both.shape[1]), dim=1).values
    lse = torch.logsumexp(torch.stack(parts, dim=1), dim=1)
    if not top:
        return lse
    return lse, torch.exp(best - lse.unsqueeze(1)).sum(dim=1)


def distinct_candidates(
    ids: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids sorted per row (N, k) int64, ok (N, k) bool): ok marks each valid (>= 0),
    non-target class once (a duplicate id counts once)."""
    srt = dedupe_rows(torch.where(ids != target.unsqueeze(1), ids, torch.full_like(ids, -1)))
    return srt, srt >= 0


@torch.no_grad()
def captured_mass(
    ids: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    lse_noty: torch.Tensor,
) -> torch.Tensor:
    """(N,) float32: each row's captured mass of the candidate ids (N, k) (-1: empty slot;
    the target and duplicates are dropped). lse_noty: lse_without_target of the same rows."""
    srt, ok = distinct_candidates(ids, target)
    safe = srt.clamp_min(0)
    z = row_dots(weight.detach()[safe].float(), hidden.detach().float())
    if bias is not None:
        z = z + bias.detach()[safe].float()
    p = torch.exp(torch.nan_to_num(z, nan=float("-inf")) - lse_noty.unsqueeze(1))
    return torch.where(ok, p, torch.zeros_like(p)).sum(dim=1)


def _padded(index) -> bool:
    return isinstance(index, ClusterIndex)


def probe_ladder(index) -> list[int] | None:
    """The nprobe settings tune_probes tries (1, 2, 4, ..., all lists), or None where the
    generator has no probe width to tune (SimHash tables, FAISS flat, FAISS on a GPU)."""
    if isinstance(index, ClusterIndex) and index.built:
        top = int(index.centroids.shape[0])
    elif isinstance(index, FaissIndex) and index.tunable:
        top = int(index.index.nlist)
    else:
        return None
    ladder, p = [], 1
    while p < top:
        ladder.append(p)
        p *= 2
    return ladder + [top]


def current_nprobe(index) -> int | None:
    """The probe width a search uses now (ClusterIndex: None -> its default), else None."""
    if isinstance(index, ClusterIndex) and index.built:
        return index.effective_nprobe
    if isinstance(index, FaissIndex) and index.tunable:
        return int(index.index.nprobe)
    return None


@torch.no_grad()
def search_probe_rows(index, hidden: torch.Tensor, k: int) -> torch.Tensor:
    """index.search(hidden, k) for a measurement: short rows are padded with random ids drawn
    from a private generator, so the probe is repeatable and leaves the global RNG (dropout,
    the user's draws) untouched."""
    extra = {"generator": torch.Generator().manual_seed(0)} if _padded(index) else {}
    return index.search(hidden, k, **extra)


@torch.no_grad()
def tune_probes(
    index,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    k: int,
    target_mass: float | None,
    relative: bool = False,
) -> dict:
    """Measure the mean captured mass of index.search(hidden, k) on the probe rows; with a
    target and a tunable generator, set the smallest nprobe of probe_ladder whose mean mass
    is >= target_mass (the widest when none is: met=False; the widest is measured first, so
    an unreachable target costs one search). Reads results on the host.

    relative: target_mass is a share of the ceiling (the mass of the exact top-k on the same
    rows: on a flat softmax no k ids hold much, and the uniform T estimates the rest well), so
    the mass to reach is target_mass x ceiling.

    Returns dict(mass, ceiling (mean mass of the exact top-k), goal (the mass to reach; None
    without a target), nprobe (None: not tunable), met (None without a target), ladder
    {nprobe: mass} of the rungs tried, rows)."""
    lse, ceiling = lse_without_target(hidden, weight, bias, target, top=max(k, 1))
    ceiling = float(ceiling.mean()) if k else 0.0
    goal = target_mass * ceiling if target_mass is not None and relative else target_mass

    def mass() -> float:
        if k == 0:  # S = {target}: nothing retrieved, nothing captured
            return 0.0
        ids = search_probe_rows(index, hidden, k)
        return float(captured_mass(ids, hidden, weight, bias, target, lse).mean())

    ladder = probe_ladder(index) if goal is not None else None
    tried: dict[int, float] = {}
    if ladder is None:
        m = mass()
    else:
        index.set_nprobe(ladder[-1])  # the widest first: an unreachable target costs one search
        tried[ladder[-1]] = m = mass()
        for p in ladder[:-1] if m >= goal else ():
            index.set_nprobe(p)
            tried[p] = m = mass()
            if m >= goal:
                break
        else:
            index.set_nprobe(ladder[-1])
            m = tried[ladder[-1]]
        tried = dict(sorted(tried.items()))
    return dict(
        mass=m,
        ceiling=ceiling,
        goal=goal,
        k=k,
        nprobe=current_nprobe(index),
        met=None if goal is None else m >= goal,
        ladder=tried,
        rows=int(hidden.shape[0]),
    )
