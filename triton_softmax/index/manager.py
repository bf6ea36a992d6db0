"""IndexManager: the candidate index of one output layer, its refresh schedule and state.

Owned by the module (composition): it holds the index over the layer's rows (all n, or one
shard's), rebuilds it every `refresh_every` training steps, on `refresh()`, after a device
move and after a checkpoint load, re-hashes only the rows with a gradient when
partial_refresh is on, and keeps the counters a checkpoint carries. It talks to the index
only through the CandidateIndex protocol (base.py), so a new generator needs no change here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator

import torch

from ..options import IndexOptions
from .base import CandidateIndex
from .clusters import ClusterIndex
from .factory import describe, make_index


class IndexManager:
    """rows: classes the index covers; dim: d; num_candidates: |S| (sets the default LSH K).

    on_refresh: callables run after every (full or partial) refresh (the drift probe);
    before_build: callables asked before a scheduled build; one returning False defers it
    to the next scheduled refresh (quality.py: nothing the index could find yet).
    """

    def __init__(self, options: IndexOptions, rows: int, dim: int, num_candidates: int) -> None:
        self.options = options
        self.rows, self.dim, self.num_candidates = rows, dim, num_candidates
        self.index: CandidateIndex | None = None
        self.method: str | None = None
        self.steps = 0  # training steps taken (forward calls with grad, in training mode)
        self.steps_at_refresh = -1
        self._pending_steps_at_refresh: int | None = None
        self.refresh_count = 0
        self.refresh_count_partial = 0
        self.last_refresh_seconds = float("nan")
        self.total_refresh_seconds = 0.0
        self.device: torch.device | None = None
        self._touched: torch.Tensor | None = None  # rows with a gradient since the last refresh
        self._touched_all = False
        self.on_refresh: list[Callable[[], None]] = []
        self.before_build: list[Callable[[], bool]] = []
        self.builds_deferred = 0
        self._pending_index_state: dict | None = None  # a checkpoint's cluster lists

    @property
    def seed(self) -> int:
        return self.options.seed

    def explain(
        self,
        method: str,
        num_uniform: int | None = None,
        scheme: str | None = None,
        auto: bool = False,
    ) -> str:
        text = describe(method, self.rows, self.num_candidates, self.options, self.device)
        excluded = getattr(self.index, "num_excluded", 0) if self.method == method else 0
        if excluded:
            text += (
                f" ({excluded} rows non-finite or masked, not in the lists; the first "
                "non-finite one is added to every search)"
            )
        if method != "full" and scheme == "shared_samples":
            text += (
                f"; one T shared by the batch ({num_uniform} draws, a dense N x {num_uniform} "
                "product), draws in a row's S removed, weight n / |T|"
            )
        elif method != "full" and scheme == "per_example" and num_uniform:
            text += (
                f"; per-example T: each row draws |T| = {num_uniform} classes uniformly from "
                "outside its S, weight (n - |S_i|) / |T|"
            )
        if method != "full" and auto and scheme == "per_example" and num_uniform:
            text += (
                " (candidate_scheme='auto' -> per_example; why: N x |T| classes pushed down a "
                "step; a T shared by the batch pushes |T|, and under Adam its rare large "
                "gradients trained worse per second: held-out perplexity rose on the stdlib "
                "next-token task; SamplingOptions.resolved)"
            )
        if method != "full" and num_uniform == 0 and self.num_candidates < self.rows:
            text += (
                "; num_uniform=0: a softmax over the retrieved S only, not an estimate of the "
                "full loss"
            )
        return text

    # ---- refresh -------------------------------------------------------------------------
    @torch.no_grad()
    def refresh(
        self, weight: torch.Tensor, bias: torch.Tensor | None, method: str, scheduled: bool = False
    ) -> None:
        """Rebuild (or partially update) the index for `method` from the current weights.

        scheduled (the forward's refresh schedule): the before_build hooks may defer the
        build; the schedule then moves on as after a build, with the index left unbuilt."""
        if method not in ("lsh", "faiss"):
            return
        t0 = time.perf_counter()
        o = self.options
        if self.index is None or self.method != method:
            self.index = make_index(
                method,
                self.rows,
                self.dim,
                self.num_candidates,
                lsh_bits=o.lsh_bits,
                lsh_tables=o.lsh_tables,
                faiss_index=o.faiss_index,
                faiss_nlist=o.faiss_nlist,
                faiss_nprobe=o.faiss_nprobe,
                seed=o.seed,
                device=weight.device,
                lsh_generator=o.lsh_generator,
                rerank_copy=o.rerank_copy,
                lsh_nprobe=o.lsh_nprobe,
            )
            self.method = method
            pending, self._pending_index_state = self._pending_index_state, None
            if pending is not None and pending.get("kind") == "clusters":
                self.index.load_state_dict(pending)  # the checkpoint's lists, not a cold build
        if scheduled and not all(hook() for hook in self.before_build):
            self.builds_deferred += 1
            self._finish_refresh(weight, t0, built=False)
            return
        if not self._partial_refresh(weight, bias):
            self.index.build(weight, bias)
        self._touched, self._touched_all = None, False
        for hook in self.on_refresh:
            hook()
        self._finish_refresh(weight, t0, built=True)

    def _finish_refresh(self, weight: torch.Tensor, t0: float, built: bool) -> None:
        self.last_refresh_seconds = time.perf_counter() - t0
        self.total_refresh_seconds += self.last_refresh_seconds
        self.refresh_count += int(built)
        # After a checkpoint load the refresh schedule continues where the saved run was.
        pending = self._pending_steps_at_refresh
        self.steps_at_refresh = self.steps if pending is None else pending
        self._pending_steps_at_refresh = None
        self.device = weight.device

    def mark_touched(self, grad: torch.Tensor) -> None:
        """Weight-gradient hook: remember which rows an optimizer step may change."""
        if not grad.is_sparse:  # a dense gradient (e.g. a tied embedding): every row
            self._touched_all = True
            return
        if self._touched is None:
            self._touched = torch.zeros(self.rows, dtype=torch.bool, device=grad.device)
        self._touched[grad._indices()[0]] = True

    def _partial_refresh(self, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
        """Re-index only the rows that received a gradient since the last refresh, when they
        are at most half the classes and the index can update in place (update_rows);
        equal to a full rebuild on the same weights, minus the hashing of unchanged rows."""
        if not (
            self.options.partial_refresh
            and self.index is not None
            and self.index.built
            and not self._touched_all
            and self._touched is not None
            and self.device == weight.device
        ):
            return False
        rows = self._touched.nonzero().flatten()  # one host sync per refresh
        if rows.numel() > self.rows // 2:
            return False
        if not self.index.update_rows(weight, bias, rows):
            return False
        self.refresh_count_partial += 1
        return True

    def stale(self, method: str, weight: torch.Tensor) -> bool:
        """Missing, or refresh_every training steps since the last refresh."""
        return (
            self.missing(method, weight)
            or self.steps_at_refresh < 0
            or self.steps - self.steps_at_refresh >= self.options.refresh_every
        )

    def missing(self, method: str, weight: torch.Tensor) -> bool:
        """No index for `method` (none yet, another method, or the weights moved); an index
        whose build was deferred is not missing: its next scheduled refresh asks again."""
        return self.index is None or self.method != method or self.device != weight.device

    def usable(self, method: str, weight: torch.Tensor) -> bool:
        """An index for `method` that is built and can be searched now."""
        return not self.missing(method, weight) and self.index.built

    # ---- counters and checkpoints --------------------------------------------------------
    def stats(self) -> dict:
        return dict(
            steps=self.steps,
            refresh_count=self.refresh_count,
            index_builds_deferred=self.builds_deferred,
            last_refresh_seconds=self.last_refresh_seconds,
            total_refresh_seconds=self.total_refresh_seconds,
            index=self.method,
            method=self.options.method,  # the configured one ("auto", "uniform", ...)
        )

    def state_dict(self) -> dict:
        return dict(
            steps=self.steps,
            steps_at_refresh=self.steps_at_refresh,
            refresh_count=self.refresh_count,
            seed=self.seed,
            # a warm-refreshed ClusterIndex's lists depend on history, not only on the
            # weights and the seed: the checkpoint keeps them (index/clusters.py)
            index_state=self.index.state_dict() if isinstance(self.index, ClusterIndex) else None,
        )

    @contextlib.contextmanager
    def kept_on_error(self, errors: list) -> Iterator[None]:
        """Undo a checkpoint load that failed: torch calls set_extra_state even when the
        module's tensors failed to load (a size mismatch is reported at the end, through
        `errors`), so the counters, seed, options and index are put back then, and when the
        load raises: a failed load changes none of them."""
        saved, before = dict(self.__dict__), len(errors)
        try:
            yield
        except BaseException:
            self.__dict__.update(saved)
            raise
        if len(errors) > before:
            self.__dict__.update(saved)

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.refresh_count = int(state["refresh_count"])
        self.options = dataclasses.replace(self.options, seed=int(state["seed"]))
        # The index is rebuilt from the loaded weights (same seed -> same hyperplanes) at
        # the next use, never reused stale; the refresh schedule continues where it was.
        self.index, self.method, self.steps_at_refresh = None, None, -1
        self._pending_steps_at_refresh = int(state["steps_at_refresh"])
        self._pending_index_state = state.get("index_state")
