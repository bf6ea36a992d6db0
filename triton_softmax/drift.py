"""Drift: how far the estimator and the index have moved from the exact loss and the weights.

Two measurements, both off by default (DriftOptions):
  - a drift check every `every` training steps: exact vs approximate loss on the first `rows`
    rows, and the cosine of their gradients w.r.t. hidden (one exact pass over the slice and
    a host sync; appended to `log` and passed to `hook`);
  - index drift on probe rows since the last refresh: the fraction of (row, table) hash codes
    that changed (lsh) or the mean relative change of the rows (faiss); past refresh_drift
    the module rebuilds the index.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import torch

from . import ops
from .index.simhash import LSHIndex
from .options import DriftOptions


class DriftMonitor:
    """State of the drift measurements of one module (see the module docstring)."""

    def __init__(self, options: DriftOptions) -> None:
        self.options = options
        self.log: deque[dict] = deque(maxlen=1000)
        self.refresh_count = 0  # refreshes triggered by index drift
        self.last_index_drift = float("nan")
        self._probe_ids: torch.Tensor | None = None
        self._probe_ref: torch.Tensor | None = None

    # ---- index drift on probe rows ---------------------------------------------------------
    def _probe_state(self, weight, bias, index, method: str) -> torch.Tensor:
        """What drift is measured on: the probe rows' hash codes (lsh) or their weights (faiss)."""
        rows = weight.detach()[self._probe_ids]
        if method == "lsh" and isinstance(index, LSHIndex):  # (other generators: weights)
            b = bias.detach()[self._probe_ids] if bias is not None else None
            return ops.simhash_codes(rows, index.hyperplanes, b, index.max_norm)
        return rows.float().clone()

    def record_probe(self, weight, bias, index, method: str, seed: int) -> None:
        """At a refresh: pick the probe rows (fixed by seed) and remember their state."""
        gen = torch.Generator().manual_seed(seed + 17)
        n = weight.shape[0]
        k = min(self.options.probe_rows, n)
        self._probe_ids = torch.randperm(n, generator=gen)[:k].to(weight.device)
        self._probe_ref = self._probe_state(weight, bias, index, method)

    def state_dict(self) -> dict:
        """The probe rows and their state at the last refresh (refresh_drift compares against
        them) and the drift-triggered refresh count: a resumed run refreshes when the saved
        one would."""
        ids, ref = self._probe_ids, self._probe_ref
        return dict(
            refresh_count=self.refresh_count,
            probe_ids=ids.cpu() if ids is not None else None,
            probe_ref=ref.cpu() if ref is not None else None,
        )

    def load_state_dict(self, state: dict | None, device: torch.device) -> None:
        state = state or {}
        self.refresh_count = int(state.get("refresh_count", 0))
        ids, ref = state.get("probe_ids"), state.get("probe_ref")
        self._probe_ids = ids.to(device) if ids is not None else None
        self._probe_ref = ref.to(device) if ref is not None else None

    @torch.no_grad()
    def index_drift(self, weight, bias, index, method: str | None) -> float:
        """How far the weights moved since the last refresh, on the probe rows (a host read)."""
        if self._probe_ids is None or index is None:
            return float("nan")
        now = self._probe_state(weight, bias, index, method)
        if method == "lsh":
            drift = (now != self._probe_ref).float().mean()
        else:
            ref = self._probe_ref
            drift = ((now - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)).mean()
        self.last_index_drift = float(drift)
        return self.last_index_drift

    def refresh_due(self, steps_since_refresh: int, drift: Callable[[], float]) -> bool:
        """True when a drift-triggered refresh is due (drift() is read only on check steps)."""
        o = self.options
        return (
            o.refresh_drift is not None
            and steps_since_refresh % o.check_every == 0
            and drift() > o.refresh_drift
        )

    # ---- exact vs approximate loss ---------------------------------------------------------
    def check(
        self,
        step: int,
        hidden: torch.Tensor,
        target: torch.Tensor,
        ignore_index: int,
        approx_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
        exact_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> dict:
        """Exact vs approximate loss, and the cosine of their gradients w.r.t. hidden, on the
        first `rows` rows. approx_fn(h, y, k) and exact_fn(h, y): "sum" losses on detached
        weights. Appended to the log and passed to the hook."""
        t0 = time.perf_counter()
        k = min(self.options.rows, hidden.shape[0])
        h = hidden[:k].detach().requires_grad_(True)
        y = target[:k]
        with torch.enable_grad():
            approx = approx_fn(h, y, k)
            (g_approx,) = torch.autograd.grad(approx, h)
            approx = approx.detach()
            exact = exact_fn(h, y)
            (g_exact,) = torch.autograd.grad(exact, h)
            exact = exact.detach()
        rows = int((y != ignore_index).sum())
        cos = torch.nn.functional.cosine_similarity(
            g_approx.flatten().double(), g_exact.flatten().double(), dim=0
        )
        a, e = float(approx), float(exact)
        stats = dict(
            step=step,
            rows=rows,
            approx_loss=a / max(rows, 1),
            exact_loss=e / max(rows, 1),
            rel_error=abs(a - e) / max(abs(e), 1e-12),
            grad_cosine=float(cos),
            seconds=time.perf_counter() - t0,
        )
        self.log.append(stats)
        if self.options.hook is not None:
            self.options.hook(stats)
        return stats

    def stats(self) -> dict:
        return dict(
            refresh_count_drift=self.refresh_count,
            last_index_drift=self.last_index_drift,
            drift_checks=len(self.log),
        )
