"""Query-side lists: k-means over a sample of the queries, each centroid keeping its top-F
classes by logit (overlapping lists), union reranked by exact logits.

Class-side k-means (clusters.py) groups classes that look alike; but a query's largest logits
are spread over many such groups. Grouping the *queries* instead and precomputing, for each
query centroid u, the F classes with the largest u . w + b puts the classes a typical query of
that group ranks highest in one list (the "top-c classes per direction" idea, with
the directions learnt from the queries). A query reads its `nprobe` best centroids' lists.

Needs a sample of queries: `observe(hidden)` keeps the most recent `sample_size` rows (a
ring buffer); `build` clusters them (without any, the class rows stand in for queries).
Measured in bench/candidates.py; not yet a choice of the module's lsh_generator (the module
would have to call observe() in forward).
"""

from __future__ import annotations

from typing import Any

import torch

from ..checks import check_int_option
from .clusters import ClusterIndex
from .kmeans import assign_nearest, spherical_lloyd
from .rerank import check_rows, nonfinite_class, top_k_ids


class QueryClusterIndex(ClusterIndex):
    """num_lists query centroids, each with its top-`list_size` classes; nprobe read per query.

    list_size: classes per list (None: 2.5% of n).
    """

    def __init__(
        self,
        dim: int,
        num_lists: int = 128,
        nprobe: int = 2,
        list_size: int | None = None,
        sample_size: int = 8192,
        iters: int = 8,
        seed: int = 0,
        validate: bool = False,
    ) -> None:
        super().__init__(
            dim, num_lists=num_lists, nprobe=nprobe, iters=iters, seed=seed, validate=validate
        )
        if list_size is not None:
            check_int_option("list_size", list_size, 1)
        check_int_option("sample_size", sample_size, 1)
        self.list_size, self.sample_size = list_size, sample_size
        self.sample: torch.Tensor | None = None

    @torch.no_grad()
    def observe(self, hidden: torch.Tensor) -> None:
        """Keep the latest `sample_size` query rows (detached, float32)."""
        h = hidden.detach().float()
        self.sample = h if self.sample is None else torch.cat([self.sample, h])
        self.sample = self.sample[-self.sample_size :]

    @torch.no_grad()
    def build(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> QueryClusterIndex:
        if weight.shape[1] != self.dim:
            raise ValueError(f"weight has d={weight.shape[1]}, index was made for d={self.dim}")
        ok = check_rows(weight, bias, self.validate)
        self.any_nonfinite, self.first_nonfinite = nonfinite_class(weight, bias)
        self.weight = weight.detach()
        self.bias = bias.detach() if bias is not None else None
        self.has_bias = bias is not None
        self.n = weight.shape[0]
        self.num_excluded = int(self.n - int(ok.sum()))
        self.live_rerank = True
        q = self.sample if self.sample is not None else self.weight[ok].float()
        q = q.to(weight.device)
        if q.shape[0] == 0:  # nothing to cluster: one empty list, searches pad
            q = torch.ones(1, self.dim, device=weight.device)
        keys = torch.nn.functional.normalize(q, dim=1)
        gen = torch.Generator().manual_seed(self.seed)
        c = min(self.num_lists, keys.shape[0])
        init = torch.randperm(keys.shape[0], generator=gen)[:c].to(keys.device)
        cent = spherical_lloyd(keys, keys[init].clone(), self.iters, gen)
        # each centroid's list: its top-F selectable classes, in the raw query scale (the
        # mean query of the group, so the bias weighs as it does for real queries)
        a = assign_nearest(keys, cent)
        sums = torch.zeros(c, q.shape[1], device=q.device).index_add_(0, a, q)
        counts = torch.bincount(a, minlength=c).clamp_min(1).unsqueeze(1)
        mean_q = sums / counts
        F = min(self.list_size or max(1, int(0.025 * self.n)), int(ok.sum()) or 1)
        z = mean_q @ self.weight.float().T
        if bias is not None:
            z = z + self.bias.float()
        z = torch.where(ok, z, torch.full_like(z, float("-inf")))
        lists = z.topk(F, dim=1).indices  # (c, F)
        self.centroids = cent
        self.route = cent  # queries pick lists by cosine with the centroid
        self.order = lists.reshape(-1)
        self.offsets = torch.arange(c + 1, device=q.device) * F
        self.max_list = F
        self.rows = ok.nonzero().flatten()
        return self

    def probe_lists(self, hidden: torch.Tensor) -> torch.Tensor:
        q = torch.nn.functional.normalize(hidden.detach().float(), dim=1)
        p = min(self.nprobe, self.centroids.shape[0])
        return (q @ self.route.T).topk(p, dim=1).indices

    def _score_lists(self, hidden, lists, k):
        z, ids = super()._score_lists(hidden, lists, k)
        # lists overlap: keep each id once (the duplicates carry the same score)
        s, order = torch.sort(ids, dim=1)
        dup = torch.zeros_like(s, dtype=torch.bool)
        dup[:, 1:] = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 0)
        drop = torch.zeros_like(dup).scatter_(1, order, dup)
        z = torch.where(drop, torch.full_like(z, float("-inf")), z)
        return z, torch.where(drop, torch.full_like(ids, -1), ids)

    def _top_of_lists(self, hidden, lists, k):
        return top_k_ids(*self._score_lists(hidden, lists, k), k)[1]

    def update_rows(self, weight, bias, rows) -> bool:
        return False

    def fraction_scored(self, hidden: torch.Tensor) -> float:
        from .rerank import dedupe_rows

        return float((dedupe_rows(self.union(hidden)) >= 0).sum(1).float().mean()) / self.n

    def state_dict(self) -> dict[str, Any]:
        return dict(
            kind="query_clusters",
            dim=self.dim,
            num_lists=self.num_lists,
            nprobe=self.nprobe,
            list_size=self.list_size,
            sample_size=self.sample_size,
            iters=self.iters,
            seed=self.seed,
        )
