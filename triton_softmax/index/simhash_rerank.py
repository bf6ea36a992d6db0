"""SimHash tables whose bucket union is scored with exact logits (multi-probe, centred keys).

The lsh path of index/simhash.py ranks a capped read of each bucket by collision count, which on a
trained model keeps almost none of the classes with the largest logits. Here:
  - keys are centred rows x - mu (q . mu is the same for every class: free for ranking),
    hashed either normalised ("normalized": the angle of x - mu) or through the MIPS
    transform ("mips": [x - mu, sqrt(M^2 - |x - mu|^2)] / M, index/simhash.py's transform);
  - a query probes, in each of L tables, its own bucket and the `probes - 1` buckets one bit
    flip away on its lowest-margin bits (multi-probe);
  - the union of the probed buckets (each read up to `max_per_bucket` ids, in the random
    within-bucket order of reference/simhash.py bucket_table_ref) is scored with exact
    logits under the live weights (rerank.py) and search keeps the k best.
Hashing and bucket tables go through ops.simhash_codes / ops.bucket_table (Triton on a GPU,
the reference/simhash.py twins on CPU).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .. import nonfinite as _nf
from .. import ops
from ..checks import check_int_option
from .rerank import check_rows, nonfinite_class, rerank_union
from .simhash import MAX_BITS, make_hyperplanes

KEYS = ("normalized", "mips")


def default_bits(n: int) -> int:
    """K with about 2 classes per bucket (16 bits at n = 117,659)."""
    return int(min(MAX_BITS, max(1, round(math.log2(max(2.0, n / 2))))))


class SimHashIndex:
    """Multi-probe SimHash over centred keys, union reranked exactly.

    dim: d; num_bits K (None: default_bits(n)); num_tables L; probes per table (1 = own
    bucket only); keys: "normalized" | "mips"; max_per_bucket: ids read per probed bucket
    (None: 8 x the mean bucket size, at least 16).
    """

    def __init__(
        self,
        dim: int,
        num_bits: int | None = None,
        num_tables: int = 8,
        probes: int = 8,
        keys: str = "normalized",
        center: bool = True,
        max_per_bucket: int | None = None,
        seed: int = 0,
        validate: bool = False,
    ) -> None:
        if num_bits is not None:
            check_int_option("num_bits", num_bits, 1, MAX_BITS)
        check_int_option("num_tables", num_tables, 1, 256)
        check_int_option("probes", probes, 1)
        if keys not in KEYS:
            raise ValueError(f"keys must be one of {KEYS}, got {keys!r}")
        self.dim, self.num_bits, self.num_tables, self.probes = dim, num_bits, num_tables, probes
        self.keys, self.center, self.max_per_bucket = keys, center, max_per_bucket
        self.seed, self.validate = seed, validate
        self.n = 0
        self.sorted_ids: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        self.num_excluded = 0

    @property
    def built(self) -> bool:
        return self.sorted_ids is not None

    def _hash_rows(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """(m, L) int32 codes of rows [w, b] under the index's centring and key transform."""
        x = weight.detach().float() - self.mu_w
        b = bias.detach().float() - self.mu_b if bias is not None else None
        if self.keys == "normalized":
            sq = (x * x).sum(1) + (b * b if b is not None else 0)
            scale = sq.sqrt().clamp_min(1e-12)
            x = x / scale.unsqueeze(1)
            b = b / scale if b is not None else None
            return ops.simhash_codes(x, self.hyperplanes, b, None)
        return ops.simhash_codes(x, self.hyperplanes, b, self.max_norm)

    @torch.no_grad()
    def build(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> SimHashIndex:
        if weight.shape[1] != self.dim:
            raise ValueError(f"weight has d={weight.shape[1]}, index was made for d={self.dim}")
        ok = check_rows(weight, bias, self.validate)
        self.any_nonfinite, self.first_nonfinite = nonfinite_class(weight, bias)
        rows = ok.nonzero().flatten()
        self.weight = weight.detach()
        self.bias = bias.detach() if bias is not None else None
        self.n = weight.shape[0]
        self.num_excluded = int(self.n - rows.numel())
        self.has_bias = bias is not None
        m = max(1, rows.numel())
        K = self.num_bits or default_bits(m)
        self.K = K
        self.hyperplanes = make_hyperplanes(self.dim, K, self.num_tables, self.seed, weight.device)
        w = self.weight[rows].float()
        b = self.bias[rows].float() if bias is not None else None
        self.mu_w = w.mean(0) if self.center and rows.numel() else torch.zeros_like(w[0:1][0])
        self.mu_b = b.mean() if (b is not None and self.center and rows.numel()) else 0.0
        sq = ((w - self.mu_w) ** 2).sum(1)
        if b is not None:
            sq = sq + (b - self.mu_b) ** 2
        self.max_norm = sq.max().sqrt() * 1.05 if rows.numel() else torch.tensor(1.0)
        codes = self._hash_rows(w, b) if rows.numel() else torch.zeros(0, self.num_tables)
        sorted_pos, self.offsets = ops.bucket_table(codes.int(), K, self.seed)
        self.rows = rows
        self.sorted_ids = rows[sorted_pos.long()] if rows.numel() else sorted_pos.long()
        self.bucket_read = self.max_per_bucket or max(16, math.ceil(8 * m / (1 << K)))
        return self

    def update_rows(
        self, weight: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor
    ) -> bool:
        """Not in place: the centring and M move with every row; the caller rebuilds."""
        return False

    def probe_codes(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, L, P) int64 bucket codes: the query's own, then single flips of its
        lowest-margin bits."""
        L, K, _ = self.hyperplanes.shape
        q = hidden.detach().float()
        planes = self.hyperplanes.reshape(L * K, -1)
        proj = q @ planes[:, : self.dim].T
        if self.has_bias:
            proj = proj + planes[:, self.dim]
        proj = proj.view(-1, L, K)
        bits = (proj > 0).long()
        weights = 2 ** torch.arange(K, device=q.device)
        base = (bits * weights).sum(2)  # (N, L)
        P = min(self.probes, K + 1)
        if P == 1:
            return base.unsqueeze(2)
        low = proj.abs().topk(P - 1, dim=2, largest=False).indices  # (N, L, P - 1)
        flips = base.unsqueeze(2) ^ (1 << low)
        return torch.cat([base.unsqueeze(2), flips], dim=2)

    def union(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, L x P x B) int64: the ids of every probed bucket (B read each), -1 padded."""
        if not self.built:
            raise RuntimeError("SimHashIndex.union before build()")
        N = hidden.shape[0]
        codes = self.probe_codes(hidden)
        L = self.num_tables
        table = torch.arange(L, device=codes.device).view(1, L, 1)
        start = self.offsets[table, codes]
        end = self.offsets[table, codes + 1]
        B = self.bucket_read
        pos = start.unsqueeze(3) + torch.arange(B, device=codes.device)
        ok = pos < end.unsqueeze(3)
        pos = torch.where(ok, pos, torch.zeros_like(pos))
        tab = table.unsqueeze(3).expand_as(pos)
        ids = self.sorted_ids.view(L, -1)[tab, pos] if self.sorted_ids.numel() else pos
        ids = torch.where(ok, ids, torch.full_like(ids, -1)).reshape(N, -1)
        return _nf.add_nonfinite_class(ids, self.any_nonfinite, self.first_nonfinite)

    def search(
        self, hidden: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(N, k) int64: the k best of the probed union by exact logit, best first."""
        if not self.built:
            raise RuntimeError("SimHashIndex.search before build(): call build(weight, bias)")
        top = rerank_union(
            hidden.detach(), self.weight, self.bias, self.union(hidden), k, generator
        )
        # the first non-finite class row (if any) in every row's last slot (nonfinite.py)
        return _nf.add_nonfinite_class(top, self.any_nonfinite, self.first_nonfinite)

    def fraction_scored(self, hidden: torch.Tensor) -> float:
        u = self.union(hidden)
        from .rerank import dedupe_rows

        return float((dedupe_rows(u) >= 0).sum(1).float().mean()) / max(1, self.n)

    def state_dict(self) -> dict[str, Any]:
        return dict(
            kind="simhash",
            dim=self.dim,
            num_bits=self.num_bits,
            num_tables=self.num_tables,
            probes=self.probes,
            keys=self.keys,
            center=self.center,
            max_per_bucket=self.max_per_bucket,
            seed=self.seed,
        )
