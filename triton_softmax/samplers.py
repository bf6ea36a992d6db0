"""Proposal distributions q for the sampled part T of the estimator (the log-Q correction).

With T drawn i.i.d. from q over all n classes, the estimator of the mass outside S is

    sum_{t in T} 1[t not in S] e^{z_t} / (|T| q(t)),

unbiased for sum_{j not in S} e^{z_j}: a draw t gets log-weight -log|T| - log q(t), and a draw
that falls in S (an "accidental hit", e.g. the target) gets weight 0 (remove_accidental_hits);
keeping hits instead counts those classes twice (biased, offered for parity with
TensorFlow's sampled_softmax_loss(remove_accidental_hits=False)).

The default per-example scheme draws T uniformly from the complement of S instead (exact
weights (n - |S|)/|T|, no hits possible); see candidates.py.

Class weights must be positive and finite for every class: a class with q = 0 is never drawn,
so its mass would be missing from every estimate (Z biased low). Zero weights (e.g. frequency
counts with unseen classes) raise ValueError; smooth them yourself (counts + 1, or
counts.clamp_min(floor)). Tiny positive weights keep Z unbiased, at a variance that grows as
1/q for those classes. Sampling is an inverse-CDF search (torch.searchsorted on a float64
cumulative sum), so any n works (torch.multinomial stops at 2^24 categories); log q is float64.

A head split (`CategoricalSampler.split_head(k)`, the shared schemes' num_head) scores the k
classes of largest q exactly, with weight 1, for every row, and draws T from q restricted to
the other classes: stratified sampling. On a Zipfian softmax a shared T's error is alike for
every row (each draw of a frequent class moves every row's estimate the same way), so the batch
mean keeps it; enumerating the head and drawing the tail in proportion to q removes most of
that shared error (tests/test_shared_t_zipf.py measures it against a float64 oracle).
"""

from __future__ import annotations

import math

import torch


class Sampler:
    """q over [0, n): `sample(shape, generator, device)` -> int64 ids; `log_q(ids)` -> float64
    (callers cast to their log-weight dtype)."""

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
        return torch.full(ids.shape, -math.log(self.n), dtype=torch.float64, device=ids.device)


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
        return (torch.log1p(1.0 / (j + 1.0)) / self.log_n1).log()


class CategoricalSampler(Sampler):
    """q proportional to given positive class weights (e.g. frequencies ** 0.75).

    weights: (n,) float, every entry finite and > 0 (see the module docstring: zeros raise).
    Draws by inverse CDF: u ~ U[0, total) in float64, the class whose cumulative-weight
    interval holds u (torch.searchsorted), so n may pass torch.multinomial's 2^24 limit.
    """

    def __init__(self, weights: torch.Tensor, _trusted: bool = False) -> None:
        if _trusted:  # built here from weights >= 0 with a positive sum (no host reads)
            self._build(weights.detach().double())
            return
        if weights.dim() != 1 or weights.dtype == torch.bool or weights.dtype.is_complex:
            raise ValueError(
                f"sampler weights must be a 1-D real tensor, got shape "
                f"{tuple(weights.shape)}, dtype {weights.dtype}"
            )
        w = weights.detach().double()
        if not bool(torch.isfinite(w).all()):
            raise ValueError("sampler weights must be finite (found NaN or inf)")
        zero = (w <= 0).nonzero()
        if zero.numel():
            raise ValueError(
                f"sampler weights must be > 0 for every class: {zero.numel()} of {w.numel()} "
                f"are <= 0 (first: class {int(zero[0, 0])}); such classes would never be drawn "
                "and the estimate of Z would be biased low. Smooth them, e.g. counts + 1 or "
                "counts.clamp_min(floor)"
            )
        self._build(w)

    def _build(self, w: torch.Tensor) -> None:
        self.n = w.shape[0]
        self._log_probs = (w / w.sum()).log()  # float64; -inf where a weight is 0 (a head)
        cdf = torch.cumsum(w, 0)
        self._cdf = cdf / cdf[-1]  # float64, last entry exactly 1
        self._cdf_on: dict[torch.device, torch.Tensor] = {}
        self._heads: dict[int, tuple[torch.Tensor, CategoricalSampler]] = {}

    @property
    def probs(self) -> torch.Tensor:
        return self._log_probs.exp()

    def _cdf_for(self, device) -> torch.Tensor:
        device = torch.device(device) if device is not None else self._cdf.device
        if device not in self._cdf_on:
            self._cdf_on[device] = self._cdf.to(device)
        return self._cdf_on[device]

    def sample(self, shape, generator=None, device=None) -> torch.Tensor:
        cdf = self._cdf_for(device)
        u = torch.rand(shape, generator=generator, device=cdf.device, dtype=torch.float64)
        # class i holds u in [cdf[i-1], cdf[i]): searchsorted(right=True) gives i
        ids = torch.searchsorted(cdf, u.reshape(-1), right=True).view(shape)
        return ids.clamp_(max=self.n - 1)

    def log_q(self, ids: torch.Tensor) -> torch.Tensor:
        return self._log_probs.to(ids.device)[ids]

    def split_head(self, k: int) -> tuple[torch.Tensor, CategoricalSampler]:
        """(head (k,) int64: the k classes of largest q, tail: q with the head's weight set to
        0, renormalised). Cached per k: one top-k and one cumulative sum per sampler."""
        if not 0 < k < self.n:
            raise ValueError(f"num_head must be in [1, n) = [1, {self.n}), got {k}")
        if k not in self._heads:
            head = self._log_probs.topk(k).indices.sort().values
            tail = self._log_probs.exp().index_fill(0, head, 0.0)
            self._heads[k] = head, CategoricalSampler(tail, _trusted=True)
        return self._heads[k]


def make_sampler(spec: str | torch.Tensor | Sampler, n: int) -> Sampler:
    """ "uniform" | "log_uniform" | a (n,) weight tensor | a Sampler ("auto": uniform)."""
    if isinstance(spec, Sampler):
        if spec.n != n:
            raise ValueError(f"sampler is over {spec.n} classes but n={n}")
        return spec
    if isinstance(spec, torch.Tensor):
        if spec.shape != (n,):
            raise ValueError(f"sampler weights must have shape ({n},), got {tuple(spec.shape)}")
        return CategoricalSampler(spec)
    if spec in ("uniform", "auto"):  # "auto": what an unresolved SamplingOptions means
        return UniformSampler(n)
    if spec == "frequency":
        raise ValueError(
            "sampler='frequency' counts the targets a SampledSoftmaxLoss trains on: it needs "
            "the module; here pass class weights (n,), e.g. (counts + 1) ** 0.75"
        )
    if spec == "log_uniform":
        return LogUniformSampler(n)
    raise ValueError(
        f"sampler must be 'uniform', 'log_uniform', a weight tensor or a Sampler, got {spec!r}"
    )
