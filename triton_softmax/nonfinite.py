"""Non-finite class rows (NaN or inf in a weight row or its bias) and the candidate indexes.

The documented behaviour (README, "NaN and inf"): as in torch, a row's loss is NaN when its
softmax includes a NaN or +inf logit. The full path's softmax includes every class. A sampled
path's softmax is S + T, and an index would hide a NaN class from S (FAISS never returns it;
SimHash hashes it anywhere, and a NaN row norm spoils the MIPS transform of every row). So
every index build (which reads all of W anyway) records whether some class row is non-finite
and which one comes first, as device tensors (one host read per build, none per step); the
index leaves the bad rows out (FAISS and the reranked generators) or hashes them as zeros and
never returns them (the SimHash tables), and every search puts that class into every query's
candidates. Until the next build, every row whose logit for that class is NaN or +inf is then
NaN on every path, as torch's. A path with no search (method="uniform", or search_min_mass not
met yet) gets the same class from IndexManager.scan_nonfinite, one pass over W on the refresh
schedule; the bucket tiles score it once per row; the shared-T schemes turn a +inf log-sum-exp
into NaN (loss and gradients), as the per-example kernel does. A class row that turns
non-finite between builds makes a row's loss NaN only when that row scores it. A -inf bias
is not non-finite here: it masks a class, which no index returns (index.rerank.nonfinite_class
and check_rows draw the line).
"""

from __future__ import annotations

import torch


def nonfinite_class(
    weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(any_bad 0-d bool, first_bad 0-d int64): the first class whose logit can be NaN or +inf
    (a NaN/inf weight entry, a NaN/+inf bias; a -inf bias only masks). The check reads W once
    through a row sum in fp32 (NaN and +-inf propagate; no (n, d) temporary; half the time of
    a row max and min, which method="uniform"'s functional form pays on every call). A finite
    row whose sum overflows fp32 counts as bad too: its logits overflow as well. No host read."""
    bad = ~torch.isfinite(weight.sum(dim=1, dtype=torch.float32))
    if bias is not None:
        bad = bad | torch.isnan(bias) | (bias == float("inf"))
    return bad.any(), bad.to(torch.uint8).argmax()


def finite_rows(
    weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(weight, bias with every row that is not finite zeroed (masked classes included),
    any_bad, first_bad of nonfinite_class): the rows an index can hash or cluster.

    weight: (n, d) float; bias: (n,) or None. One host read per build decides whether to
    copy: W is copied (bad rows zeroed) only when some row is not finite."""
    any_bad, first_bad = nonfinite_class(weight, bias)
    ok = torch.isfinite(weight.amax(dim=1)) & torch.isfinite(weight.amin(dim=1))
    if bias is not None:
        ok = ok & torch.isfinite(bias)
    if not bool(ok.all()):  # one host read per index build, not per step
        weight = torch.where(ok.unsqueeze(1), weight, torch.zeros((), dtype=weight.dtype))
        if bias is not None:
            bias = torch.where(ok, bias, torch.zeros((), dtype=bias.dtype))
    return weight, bias, any_bad, first_bad


def add_nonfinite_class(
    ids: torch.Tensor, any_bad: torch.Tensor | None, first_bad: torch.Tensor | None
) -> torch.Tensor:
    """Put the first non-finite class into every row's last slot when there is one.

    ids: (N, k) int64 retrieved ids (-1 empty). k = 0 gets one slot (-1 when no class is
    bad), so the shape never depends on the data (no host sync)."""
    if any_bad is None:
        return ids
    if ids.shape[1] == 0:
        ids = ids.new_full((ids.shape[0], 1), -1)
    last = torch.where(any_bad.to(ids.device), first_bad.to(ids.device), ids[:, -1])
    return torch.cat([ids[:, :-1], last.unsqueeze(1)], dim=1)
