"""Proposal distributions q for the sampled part T of the estimator (the log-Q correction).

With T drawn i.i.d. from q over all n classes, the estimator of the mass outside S is

    sum_{t in T} 1[t not in S] e^{z_t} / (|T| q(t)),

unbiased for sum_{j not in S} e^{z_j}: a draw t gets log-weight -log|T| - log q(t), and a draw
that falls in S (an "accidental hit", e.g. the target) gets weight 0 (remove_accidental_hits);
keeping hits instead counts those classes twice (biased, offered for parity with
TensorFlow's sampled_softmax_loss(remove_accidental_hits=False)).

The default per-example scheme draws T uniformly from the complement of S instead (exact
weights (n - |S|)/|T|, no hits possible); see candidates.py.
"""

from __future__ import annotations

import math

import torch


class Sampler:
    """q over [0, n): `sample(shape, generator, device)` -> int64 ids; `log_q(ids)` -> float32."""

    n: int

    def sample(self, shape, generator=None, device=None) -> torch.Tensor:
        raise NotImplementedError

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class UniformSampler(Sampler):
    def __init__(self, n: int) -> None:
        self.n = n

    def sample(self, shape, generator=None, device=None) -> torch.Tensor:
        return torch.randint(0, self.n, shape, generator=generator, device=device)

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.full(ids.shape, -math.log(self.n), dtype=torch.float32, device=ids.device)


class LogUniformSampler(Sampler):
    """Zipfian q(j) = log((j + 2) / (j + 1)) / log(n + 1), for classes sorted by frequency."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.log_n1 = math.log(n + 1)

    def sample(self, shape, generator=None, device=None) -> torch.Tensor:
        u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
        ids = torch.floor(torch.exp(u * self.log_n1)).long() - 1
        return ids.clamp_(0, self.n - 1)

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        j = ids.double()
        return (torch.log1p(1.0 / (j + 1.0)) / self.log_n1).log().float()


class CategoricalSampler(Sampler):
    """q proportional to given non-negative class weights (e.g. frequencies ** 0.75)."""

    def __init__(self, weights: torch.Tensor) -> None:
        if weights.dim() != 1 or not bool((weights >= 0).all()) or not bool(weights.sum() > 0):
            raise ValueError("sampler weights must be a 1-D non-negative tensor with positive sum")
        self.n = weights.shape[0]
        self.probs = (weights.double() / weights.double().sum()).float()
        self._log_probs = self.probs.log()

    def sample(self, shape, generator=None, device=None) -> torch.Tensor:
        numel = math.prod(shape)
        probs = self.probs.to(device) if device is not None else self.probs
        flat = torch.multinomial(probs, max(numel, 1), replacement=True, generator=generator)
        return flat[:numel].view(shape)

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        return self._log_probs.to(ids.device)[ids]


def make_sampler(spec: str | torch.Tensor | Sampler, n: int) -> Sampler:
    """ "uniform" | "log_uniform" | a (n,) weight tensor | a Sampler."""
    if isinstance(spec, Sampler):
        if spec.n != n:
            raise ValueError(f"sampler is over {spec.n} classes but n={n}")
        return spec
    if isinstance(spec, torch.Tensor):
        if spec.shape != (n,):
            raise ValueError(f"sampler weights must have shape ({n},), got {tuple(spec.shape)}")
        return CategoricalSampler(spec)
    if spec == "uniform":
        return UniformSampler(n)
    if spec == "log_uniform":
        return LogUniformSampler(n)
    raise ValueError(
        f"sampler must be 'uniform', 'log_uniform', a weight tensor or a Sampler, got {spec!r}"
    )
