"""Exact rerank of a retrieved union, shared by the candidate generators (clusters, simhash).

A generator's buckets or lists only propose classes; which of them enter S is decided by their
exact logits under the current weights (the generator keeps a reference to the live weight and
bias, so the rerank never uses the stale copy the buckets were built from). Every search
returns k valid distinct ids whenever at least k classes can be chosen: a short union is padded
with uniform classes, and rows that still fall short are answered by an exact pass over all
classes. A class whose bias is -inf (masked) or whose logit is NaN is never ranked; a class
row that is non-finite at build time (NaN/inf weight, NaN/+inf bias) is left out of the lists
and, as for every index (nonfinite.py, README "NaN and inf"), added to every search and union.
"""

from __future__ import annotations

import torch

from ..candidates import first_occurrences
from ..nonfinite import nonfinite_class  # noqa: F401  (the generators import it from here)
from ..reference.sampled_logits import row_dots

# rows of one gather (chunk x U x d floats) are bounded by this many floats (~64 MiB)
GATHER_FLOATS = 1 << 24
# on a CPU, chunks that stay in cache while bmm reads them, gathered by index_select: 2-4x
# faster than one large advanced-indexing gather (reference/simhash.py GATHER_FLOATS_CPU)
GATHER_FLOATS_CPU = 1 << 19


def check_rows(weight: torch.Tensor, bias: torch.Tensor | None, validate: bool) -> torch.Tensor:
    """(n,) bool: the rows a generator may index (finite weight row, bias not -inf / NaN).

    validate=True raises ValueError naming the argument when a weight row holds NaN/inf or
    the bias holds NaN or +inf (a -inf bias is the documented way to mask a class)."""
    row_ok = torch.isfinite(weight).all(dim=1)
    if validate and not bool(row_ok.all()):
        bad = (~row_ok).nonzero().flatten()[:5].tolist()
        raise ValueError(f"weight has non-finite rows (first: {bad}); the index cannot rank them")
    if bias is not None:
        if validate and bool((torch.isnan(bias) | (bias == float("inf"))).any()):
            raise ValueError("bias holds NaN or +inf; mask a class with bias = -inf only")
        row_ok = row_ok & torch.isfinite(bias)
    return row_ok


def dedupe_rows(ids: torch.Tensor) -> torch.Tensor:
    """(N, U) int64 ids with -1 padding -> the same width, each id once per row, -1 padded
    at the end of each row (sorted ascending otherwise)."""
    if ids.shape[1] == 0:
        return ids
    big = torch.iinfo(torch.int64).max
    s, _ = torch.sort(torch.where(ids >= 0, ids, torch.full_like(ids, big)), dim=1)
    dup = torch.zeros_like(s, dtype=torch.bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    s = torch.where(dup, torch.full_like(s, big), s)
    s, _ = torch.sort(s, dim=1)
    return torch.where(s == big, torch.full_like(s, -1), s)


def exact_scores(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ids: torch.Tensor
) -> torch.Tensor:
    """(N, U) float32 exact logits of ids (-1 -> -inf; NaN logits -> -inf), in gather chunks."""
    N, U = ids.shape
    d = weight.shape[1]
    out = torch.empty(N, U, dtype=torch.float32, device=hidden.device)
    budget = GATHER_FLOATS if hidden.is_cuda else GATHER_FLOATS_CPU
    step = max(1, budget // max(1, U * d))
    h = hidden.float()
    for lo in range(0, N, step):
        hi = min(N, lo + step)
        part = ids[lo:hi]
        safe = part.clamp_min(0).reshape(-1)
        z = row_dots(weight.index_select(0, safe).view(hi - lo, U, d).float(), h[lo:hi])
        if bias is not None:
            z = z + bias.index_select(0, safe).view(hi - lo, U).float()
        ok = (part >= 0) & ~torch.isnan(z)
        out[lo:hi] = torch.where(ok, z, torch.full_like(z, float("-inf")))
    return out


def top_k_ids(
    z: torch.Tensor, ids: torch.Tensor | None, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best columns of scores z (N, M) float: (scores (N, k), ids (N, k) int64), best
    first; ids (N, M) names the columns (None: the column positions). Non-finite scores and
    the slots past M come back as (-inf, -1), so a row always has k slots."""
    N = z.shape[0]
    kk = min(k, z.shape[1])
    s, pos = torch.topk(z, kk, dim=1)
    top = pos if ids is None else torch.gather(ids, 1, pos)
    ok = torch.isfinite(s)
    top = torch.where(ok, top, torch.full_like(top, -1))
    s = torch.where(ok, s, torch.full_like(s, float("-inf")))
    if kk < k:
        top = torch.cat([top, top.new_full((N, k - kk), -1)], dim=1)
        s = torch.cat([s, s.new_full((N, k - kk), float("-inf"))], dim=1)
    return s, top


def full_topk(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, k: int
) -> torch.Tensor:
    """(N, k) exact top-k ids over all classes (masked / NaN classes never), -1 where fewer."""
    z = hidden.float() @ weight.float().T
    if bias is not None:
        z = z + bias.float()
    z = torch.where(torch.isnan(z), torch.full_like(z, float("-inf")), z)
    return top_k_ids(z, None, k)[1]


def rerank_union(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    union: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The k best of each row's union by exact logit: (N, k) int64, best first.

    union: (N, U) int64, -1 padded, duplicates allowed. Rows whose union holds fewer than k
    selectable classes are padded with uniform classes (scored too, so they rank by logit);
    rows still short get an exact top-k over all classes. -1 only where fewer than k classes
    are selectable at all (n < k, or masked classes)."""
    N = hidden.shape[0]
    n = weight.shape[0]
    if N == 0:
        return torch.full((0, k), -1, dtype=torch.int64, device=hidden.device)
    ids = dedupe_rows(union)
    z = exact_scores(hidden, weight, bias, ids)
    short = torch.isfinite(z).sum(dim=1) < k
    if bool(short.any()):  # one host read; rare once the generator is tuned
        extra = torch.randint(n, (N, 2 * k), generator=generator, device="cpu").to(ids.device)
        extra = torch.where(short.unsqueeze(1), extra, torch.full_like(extra, -1))
        ids = dedupe_rows(torch.cat([ids, extra], dim=1))
        z = exact_scores(hidden, weight, bias, ids)
    top = top_k_ids(z, ids, k)[1]
    still = (top < 0).any(dim=1)
    if bool(still.any()):  # tiny n or heavy masking: the exact answer for those rows
        rows = still.nonzero().flatten()
        top[rows] = full_topk(hidden[rows], weight, bias, k)
    return top


def seeded(generator: torch.Generator | None, seed: int, device="cpu") -> torch.Generator:
    """`generator`, or where None one seeded by the index's `seed` on `device`: a search pads
    short rows from it, so a search is a function of its input (as the SimHash tables pad): it
    never moves the global RNG a run's dropout and draws come from, and a resumed run searches
    as the uninterrupted one did."""
    return generator or torch.Generator(device=device).manual_seed(seed)


def pad_short_rows(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    top: torch.Tensor,
    scores: torch.Tensor,
    pool: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """rerank_union's padding in fixed shapes, with no host read (for CUDA training steps).

    top: (N, k) int64 distinct ids, -1 where empty; scores: (N, k) their exact logits (-inf
    where -1); pool: (m,) int64 distinct selectable class ids (those of the index's build).
    Every row draws a random start in the pool and takes min(k, m) consecutive pool entries
    (distinct, so together with the row's own ids at least min(k, m) selectable classes);
    they are scored exactly and the k best distinct ids of row and window are kept. Rows
    that already hold k ids are returned unchanged (torch.where, not a branch). So the row
    holds k valid ids whenever k classes of the pool are still selectable under the live
    weights; there is no exact pass over all classes (rerank_union's last resort needs a
    host read). The start is drawn with `generator` on its own device, then moved."""
    N = top.shape[0]
    m = pool.numel()
    if N == 0 or k == 0 or m == 0:
        return top
    device = top.device
    gen_device = generator.device if generator is not None else device
    start = torch.randint(m, (N, 1), generator=generator, device=gen_device).to(device)
    window = pool.to(device)[(start + torch.arange(min(k, m), device=device)) % m]
    both = torch.cat([top, window], dim=1)
    z = torch.cat([scores.float(), exact_scores(hidden, weight, bias, window)], dim=1)
    # an id in both halves keeps its first slot (the same logit either way)
    first = first_occurrences(both, both >= 0)
    z = torch.where(first, z, torch.full_like(z, float("-inf")))
    merged = top_k_ids(z, both, k)[1]
    short = (top < 0).any(dim=1, keepdim=True)
    return torch.where(short, merged, top)
