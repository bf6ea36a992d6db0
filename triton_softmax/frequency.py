"""sampler="frequency": a module's proposal of T from the targets it has trained on.

q(j) is proportional to (count_j + 1) ** 0.75 (word2vec's unigram power; the + 1 keeps every
class drawable, so the estimator stays unbiased for classes never seen as a target). With
num_head > 0 the most frequent classes are scored exactly for every row and T is drawn from q
over the rest (samplers.CategoricalSampler.split_head). Why: on a Zipfian task a uniform T
shared by the batch misses or hits the frequent classes for every row at once, so its error
does not average over the batch and the shared gradient swings (tests/test_shared_t_zipf.py).

The counts grow every training step on the weight's device (one index_add_, no host read); the
proposal is rebuilt from them at steps 0, 1, 2, 4, ... and then every `every` steps (a cumulative
sum and a top-k over n), and only from the counts taken at that step, so a run resumed from a
checkpoint (which holds both) draws the same T as the uninterrupted run.
"""

from __future__ import annotations

import torch

from .samplers import CategoricalSampler

FREQUENCY_POWER = 0.75


class ClassFrequency:
    """Target counts (n,) float64 and the CategoricalSampler built from them."""

    def __init__(self, n: int, every: int) -> None:
        self.n, self.every = n, max(int(every), 1)
        self.counts: torch.Tensor | None = None  # all targets seen in training
        self.built_from: torch.Tensor | None = None  # the counts the proposal was built from
        self._sampler: CategoricalSampler | None = None

    def observe(self, target: torch.Tensor, ignore_index: int, step: int) -> None:
        """Count a training batch's targets (rows equal to ignore_index are not counted);
        the proposal is rebuilt from the counts at steps 0, 1, 2, 4, 8, ... below `every`
        (the first counts are few and change fast) and at every multiple of `every`."""
        target = target.long()
        if self.counts is None or self.counts.device != target.device:
            self.counts = torch.zeros(self.n, dtype=torch.float64, device=target.device)
        valid = target != ignore_index
        self.counts.index_add_(0, torch.where(valid, target, 0), valid.double())
        early = step < self.every and step & (step - 1) == 0  # 0, 1, 2, 4, 8, ...
        if self.built_from is None or early or step % self.every == 0:
            self.built_from, self._sampler = self.counts.clone(), None

    def sampler(self, device: torch.device) -> CategoricalSampler:
        """The proposal now (uniform until a training step was counted)."""
        if self._sampler is None:
            base = self.built_from
            if base is None:
                base = torch.zeros(self.n, dtype=torch.float64, device=device)
            self._sampler = CategoricalSampler((base + 1.0) ** FREQUENCY_POWER, _trusted=True)
        return self._sampler

    def state_dict(self) -> dict:
        return {"counts": self.counts, "built_from": self.built_from}

    def load_state_dict(self, state: dict | None, device: torch.device) -> None:
        """A checkpoint without counts (saved before sampler="frequency" existed) starts the
        counts from zero."""
        state = state or {}
        counts, built = state.get("counts"), state.get("built_from")
        # copies: the counts grow in place, and the saved state may be another module's own
        self.counts = None if counts is None else counts.to(device, torch.float64, copy=True)
        self.built_from = None if built is None else built.to(device, torch.float64, copy=True)
        self._sampler = None
