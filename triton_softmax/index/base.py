"""The protocol every candidate generator implements (SimHash tables, FAISS, k-means lists...).

A generator proposes classes S for each query; the estimator scores S with exact logits, so a
generator is judged only by which classes it returns (recall of the exact top-k, captured
softmax mass) and what that costs. The module and the index manager talk to generators only
through this protocol, so a new generator plugs in without touching them.

Conventions for every method that returns ids: int64, on the queries' device, -1 in empty
slots, no duplicates within a row (the target may appear: callers drop it).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class CandidateIndex(Protocol):
    """Build over the class rows, then answer queries.

    n: the number of classes the index was built over (0 before `build`).
    """

    n: int

    @property
    def built(self) -> bool: ...

    def build(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> CandidateIndex:
        """Index all rows. weight: (n, d) float; bias: (n,) or None. Returns self."""
        ...

    def update_rows(
        self, weight: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor
    ) -> bool:
        """Re-index only `rows` (int64 (r,)) of the current weights. Returns False, changing
        nothing, when the generator cannot update in place (the caller then rebuilds)."""
        ...

    def search(self, hidden: torch.Tensor, k: int) -> torch.Tensor:
        """(N, k) int64: the k best candidates per query (best first where the generator
        ranks), -1 only where the index holds fewer than k classes in total."""
        ...

    def union(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, U) int64: every class the generator retrieves for each query, unranked and
        uncapped, -1 padded (the bucket-shared scheme scores all of it)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild the same index (settings and seed; the tables
        themselves are rebuilt from the loaded weights)."""
        ...


# Attributes of a built index that are views of the module's live weight and bias: a snapshot
# leaves them out and a restore points them at the receiving module's parameters.
LIVE_ATTRS = ("weight", "bias")


class Snapshot:
    """snapshot / restore for an index whose built state is its attributes (tensors and plain
    values): a checkpoint then holds the index as the last refresh built it, so a resumed run
    searches what the uninterrupted one searches until its next scheduled refresh, and that
    refresh (a warm one for the k-means lists) starts from the same state.

    Names starting with "_" (caches, FAISS GPU resources) are left out."""

    def snapshot(self) -> dict[str, Any]:
        """The built index as plain values and CPU tensors (torch.save / weights_only safe)."""
        state = {}
        for name, value in vars(self).items():
            if name in LIVE_ATTRS or name.startswith("_"):
                continue
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().clone()
            state[name] = value
        return state

    def restore(
        self, state: dict[str, Any], weight: torch.Tensor, bias: torch.Tensor | None
    ) -> None:
        """Put back a snapshot, its tensors on the weight's device, reading the live rows
        from `weight` (n, d) and `bias` (n,) or None."""
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                value = value.to(weight.device)
            setattr(self, name, value)
        self.weight = weight.detach()
        self.bias = bias.detach() if bias is not None else None
