"""The sampled softmax most users write themselves: the peer to beat on speed.

TensorFlow's `sampled_softmax_loss` pattern in about 20 lines of PyTorch: ONE set of K
uniform negatives shared by the whole batch, one dense (N, d) x (d, K) product, the true
logit beside it, cross-entropy over the K + 1 columns, accidental hits (a negative equal to
the row's target) masked out, and a sparse gradient into the output weight through
F.embedding(sparse=True). With a uniform proposal the log-Q correction subtracts the same
constant from every column, so it cancels in the softmax and is left out. It is not an
estimator of the full loss (no (n - 1) / K weight on the negatives): it is what people train
with. Used by bench.sweep (method "shared_neg"), bench.step_profile and the accuracy runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def shared_negative_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    num_negatives: int,
    generator: torch.Generator | None = None,
    sparse: bool = True,
) -> torch.Tensor:
    """hidden (N, d), weight (n, d), target (N,) int64 -> mean loss over target + K negatives.

    sparse=False gives a dense weight gradient (for torch.optim.Adam)."""
    N, n = hidden.shape[0], weight.shape[0]
    neg = torch.randint(n, (num_negatives,), generator=generator).to(hidden.device)
    rows = F.embedding(torch.cat([target, neg]), weight, sparse=sparse)  # (N + K, d)
    true_logit = (hidden * rows[:N]).sum(1, keepdim=True)  # (N, 1)
    neg_logits = hidden @ rows[N:].T  # (N, K): one dense product
    hit = neg.unsqueeze(0) == target.unsqueeze(1)  # accidental hits
    neg_logits = neg_logits.masked_fill(hit, float("-inf"))
    logits = torch.cat([true_logit, neg_logits], 1)
    zeros = torch.zeros(N, dtype=torch.int64, device=hidden.device)
    return F.cross_entropy(logits, zeros)


class SharedNegativeSoftmax(nn.Module):
    """Output layer (n, d) trained with K uniform negatives shared by the batch.

    forward(hidden (N, d) float, target (N,) int64) -> mean loss (0-d); the weight gradient
    is a sparse COO tensor of the N + K gathered rows (use SGD, SparseAdam, FusedSparseAdam).
    weight: an (n, d) Parameter to use instead of a fresh one.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        num_negatives: int,
        seed: int = 0,
        weight: nn.Parameter | None = None,
    ) -> None:
        super().__init__()
        self.num_classes, self.num_negatives = num_classes, num_negatives
        if weight is None:
            bound = 1.0 / math.sqrt(dim)
            weight = nn.Parameter(torch.empty(num_classes, dim).uniform_(-bound, bound))
        self.weight = weight  # (n, d); may be tied to another module's weight
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return shared_negative_loss(hidden, self.weight, target, self.num_negatives, self.generator)

    @torch.no_grad()
    def topk(self, hidden: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact top-k classes (evaluation): (scores (N, k), ids (N, k))."""
        from triton_softmax import exact_topk

        return exact_topk(hidden, self.weight, k)
