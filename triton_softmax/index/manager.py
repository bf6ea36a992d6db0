"""IndexManager: the candidate index of one output layer, its refresh schedule and state.

Owned by the module (composition): it holds the index over the layer's rows (all n, or one
shard's), rebuilds it every `refresh_every` training steps, on `refresh()` and after a device
move, re-hashes only the rows with a gradient when partial_refresh is on, and keeps what a
checkpoint carries: the counters, the schedule and the index as last built (put back at the
first use after a load, so a resumed run repeats the uninterrupted one). It talks to the index
only through the CandidateIndex protocol (base.py), so a new generator needs no change here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator

import torch

from .. import nonfinite as _nf
from ..options import IndexOptions
from .base import CandidateIndex
from .factory import describe, make_index


def shared_t_text(sampling) -> str:
    """explain()'s words for a T shared by the batch (its proposal and exact head)."""
    t, head, q = sampling.num_uniform, sampling.num_head, sampling.sampler
    cols = t + head
    text = f"; one T shared by the batch ({t} draws"
    if head:
        text += f" + an exact head of the {head} classes of largest q"
    text += f", a dense N x {cols} product), draws in a row's S removed, "
    if sampling.uniform:
        return text + "weight n / |T|"
    name = q if isinstance(q, str) else type(q).__name__
    text += f"weight 1 / (|T| q(t)), q: {name}"
    if q == "frequency":
        text += " ((count + 1) ** 0.75 of the targets trained on)"
    return text


AUTO_WHY = {  # SamplingOptions.resolved has the measurements
    "per_example": "N x |T| classes pushed down a step; a T shared by the batch pushes |T|, "
    "and under Adam its rare large gradients trained worse per second: held-out perplexity "
    "rose on the stdlib next-token task; SamplingOptions.resolved",
    "hybrid": "own draws push N x |T| classes down a step in small pieces, and the shared "
    "draws give every row many more scored negatives for one dense product; "
    "SamplingOptions.resolved",
    "shared_samples": "a T shared by the batch sized for coverage (at least 1,024 columns, "
    "options.AUTO_SHARED_T) while every row keeps its own S: one dense product, cheaper than "
    "gathering N x |T| rows, and it led per-example T at every budget from 30 s on WordNet "
    "synset; its head of the most frequent targets, scored exactly, and draws by frequency "
    "keep a Zipfian task's shared error small (frequency.py); SamplingOptions.resolved",
}


class IndexManager:
    """rows: classes the index covers; dim: d; num_candidates: |S| (sets the default LSH K).

    on_refresh: callables run after every (full or partial) refresh (the drift probe);
    on_resume: callables run when a loaded checkpoint's index is put back (no build);
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
        self._loaded = False  # a checkpoint was loaded and no index is built since
        self.refresh_count = 0
        self.refresh_count_partial = 0
        self.last_refresh_seconds = float("nan")
        self.total_refresh_seconds = 0.0
        self.device: torch.device | None = None
        self._touched: torch.Tensor | None = None  # rows with a gradient since the last refresh
        self._touched_all = False
        # no index to record it (method "uniform", or no search yet): the first non-finite
        # class row, scanned on the refresh schedule (scan_nonfinite)
        self._scan: tuple[torch.Tensor, torch.Tensor] | None = None
        self._scan_step = -1
        self.on_refresh: list[Callable[[], None]] = []
        self.on_resume: list[Callable[[], None]] = []  # a checkpoint's index was put back
        self.before_build: list[Callable[[], bool]] = []
        self.builds_deferred = 0
        self._pending_index_state: dict | None = None  # an older checkpoint's cluster lists
        self._pending_snapshot: dict | None = None  # a checkpoint's index, as last built

    @property
    def seed(self) -> int:
        return self.options.seed

    def explain(self, method: str, sampling=None, auto: bool = False) -> str:
        """The index's part of explain(): generator, widths, and the candidate scheme of the
        SamplingOptions `sampling` (|T|, the shared T's size) and, for "auto", why."""
        text = describe(method, self.rows, self.num_candidates, self.options, self.device)
        excluded = getattr(self.index, "num_excluded", 0) if self.method == method else 0
        if excluded:
            text += (
                f" ({excluded} rows non-finite or masked, not in the lists; the first "
                "non-finite one is added to every search)"
            )
        scheme = sampling.scheme if sampling is not None else None
        num_uniform = sampling.num_uniform if sampling is not None else None
        if method != "full" and scheme == "shared_samples":
            text += shared_t_text(sampling)
        elif method != "full" and scheme == "per_example" and num_uniform:
            text += (
                f"; per-example T: each row draws |T| = {num_uniform} classes uniformly from "
                "outside its S, weight (n - |S_i|) / |T|"
            )
        elif method != "full" and scheme == "hybrid":
            m = sampling.num_shared
            text += (
                f"; hybrid T: each row draws its own |T| = {num_uniform} classes from outside "
                f"its S (gathered) and the batch shares {m} more (a dense N x {m} product, "
                f"draws in a row's S removed); every draw weighted about n / {m + num_uniform}"
            )
        if method != "full" and auto and scheme in AUTO_WHY and num_uniform:
            text += f" (candidate_scheme='auto' -> {scheme}; why: {AUTO_WHY[scheme]})"
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
        if self.index is None or self.method != method:
            # a checkpoint's index first: the build below is then the warm refresh the
            # uninterrupted run makes at this step
            if not self.resume(method, weight, bias):
                self.index = self.new_index(method, weight.device)
                self.method = method
                pending, self._pending_index_state = self._pending_index_state, None
                if pending is not None and pending.get("kind") == "clusters":
                    self.index.load_state_dict(pending)  # the checkpoint's lists
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

    def new_index(self, method: str, device: torch.device | None = None) -> CandidateIndex:
        """The unbuilt index for `method` under these options."""
        o = self.options
        return make_index(
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
            device=device,
            lsh_generator=o.lsh_generator,
            rerank_copy=o.rerank_copy,
            lsh_nprobe=o.lsh_nprobe,
            lsh_rank=o.lsh_rank,
        )

    def resume(self, method: str, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
        """Put back the index a loaded checkpoint holds, at its first use for `method` (the
        module's weights are on their device by then). True when it did; the schedule then
        continues as saved: no rebuild until the next scheduled refresh."""
        snap = self._pending_snapshot
        if snap is None or self.index is not None or snap["method"] != method:
            return False
        self._pending_snapshot = None
        if snap["device_type"] != weight.device.type:  # layouts differ by device: rebuild
            return False
        self.index = self.new_index(method, weight.device)
        self.index.restore(snap["index"], weight, bias)
        self.method, self.device = method, weight.device
        self._loaded = False
        for hook in self.on_resume:
            hook()
        return True

    def due(self) -> bool:
        """The refresh schedule asks for a refresh at this step."""
        return (
            self.steps_at_refresh < 0
            or self.steps - self.steps_at_refresh >= self.options.refresh_every
        )

    def _finish_refresh(self, weight: torch.Tensor, t0: float, built: bool) -> None:
        self.last_refresh_seconds = time.perf_counter() - t0
        self.total_refresh_seconds += self.last_refresh_seconds
        self.refresh_count += int(built)
        # The first build after a checkpoint load that held no usable index (an older
        # checkpoint, another device type) keeps the saved schedule unless it was due anyway:
        # the run refreshes at the steps the uninterrupted one does.
        if not (self._loaded and not self.due()):
            self.steps_at_refresh = self.steps
        self._loaded = False
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
        return self.missing(method, weight) or self.due()

    def missing(self, method: str, weight: torch.Tensor) -> bool:
        """No index for `method` (none yet, another method, or the weights moved); an index
        whose build was deferred is not missing: its next scheduled refresh asks again."""
        return self.index is None or self.method != method or self.device != weight.device

    def scan_nonfinite(
        self, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(any_bad, first_bad) of nonfinite.nonfinite_class for a forward that retrieves
        nothing (method "uniform", search_min_mass not met), recorded as an index build
        records it: once every refresh_every steps (one pass over W then, no host read), so
        such a path follows the same non-finite rule as a search (nonfinite.py)."""
        if (
            self._scan_step < 0
            or self.steps - self._scan_step >= self.options.refresh_every
            or (self._scan is not None and self._scan[0].device != weight.device)
        ):
            b = bias.detach() if bias is not None else None
            self._scan = _nf.nonfinite_class(weight.detach(), b)
            self._scan_step = self.steps
        return self._scan

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
        """Counters, seed, the rows touched since the last refresh (partial_refresh) and the
        index as last built (index.base.Snapshot: the resumed run searches the same index and
        refreshes at the same steps as the uninterrupted one)."""
        index = None
        if self.index is not None and self.index.built:
            index = dict(
                method=self.method,
                device_type=self.device.type if self.device is not None else "cpu",
                settings=_settings(self.index),
                index=self.index.snapshot(),
            )
        elif self._pending_snapshot is not None:  # loaded, not used yet: pass it on
            index = self._pending_snapshot
        touched = self._touched.cpu() if self._touched is not None else None
        return dict(
            steps=self.steps,
            steps_at_refresh=self.steps_at_refresh,
            refresh_count=self.refresh_count,
            seed=self.seed,
            touched=touched,
            touched_all=self._touched_all,
            scan=[t.cpu() for t in self._scan] if self._scan is not None else None,
            scan_step=self._scan_step,
            index_snapshot=index,
        )

    def check_state(self, state: dict, device: torch.device | None = None) -> None:
        """Raise ValueError, changing nothing, when a checkpoint's index cannot be the one
        this manager builds: another method or generator, or other settings (lsh bits and
        tables, FAISS kind, k-means lists...). A module that builds no index (method "full"
        or "uniform") ignores a checkpoint's index."""
        snap = state.get("index_snapshot")
        configured = self.options.method
        if snap is None or configured not in ("lsh", "faiss", "auto"):
            return
        method = snap["method"]
        own_method = method if configured == "auto" else configured
        seeded = dataclasses.replace(self.options, seed=int(state["seed"]))
        own = IndexManager(seeded, self.rows, self.dim, self.num_candidates)
        own_settings = _settings(own.new_index(own_method, device))
        diff = [
            f"{k}: checkpoint {v!r}, module {own_settings.get(k)!r}"
            for k, v in snap["settings"].items()
            if own_settings.get(k) != v
        ]
        if own_method != method or diff:
            saved = f"{method} index {_kind(method, snap['settings'])}"
            built = f"{own_method} index {_kind(own_method, own_settings)}"
            raise ValueError(
                f"the checkpoint holds a {saved}, this module builds a {built}"
                + (f" ({', '.join(diff)})" if own_method == method else "")
                + ": load it into a module configured as the one that saved it"
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
        """Take a checkpoint's counters, seed and schedule; its index (when it holds one) is
        put back at the first use (resume), else the index is built from the loaded weights
        then, keeping the saved schedule."""
        self.check_state(state)
        self.steps = int(state["steps"])
        self.refresh_count = int(state["refresh_count"])
        self.options = dataclasses.replace(self.options, seed=int(state["seed"]))
        self.index, self.method, self.device = None, None, None
        self.steps_at_refresh = int(state["steps_at_refresh"])
        self._loaded = True
        self._pending_snapshot = state.get("index_snapshot")
        self._pending_index_state = state.get("index_state")  # checkpoints before 2026-12-07
        touched = state.get("touched")
        self._touched = touched.clone() if touched is not None else None
        self._touched_all = bool(state.get("touched_all", False))
        scan = state.get("scan")
        self._scan = tuple(scan) if scan is not None else None
        self._scan_step = int(state.get("scan_step", -1))


# settings of an index that are state, not configuration (tuned by target_mass, or built)
_STATE_KEYS = ("centroids", "assign", "nprobe", "seed")


def _settings(index: CandidateIndex) -> dict:
    """The configuration an index was made with: its state_dict less its built state."""
    return {k: v for k, v in index.state_dict().items() if k not in _STATE_KEYS}


def _kind(method: str, settings: dict) -> str:
    if method == "faiss":
        return f"({settings.get('kind')})"
    kind = settings.get("kind")
    name = {"simhash": "tables"}.get(kind, kind)
    if name == "tables":
        return f"(tables, K={settings.get('num_bits')} bits x L={settings.get('num_tables')})"
    return f"({name})"
