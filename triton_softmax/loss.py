"""The nn.Module: an output layer that owns weight and bias and delegates the rest.

SampledSoftmaxLoss holds option objects (options.py), an IndexManager (index/manager.py: the
candidate index, its refresh schedule and checkpoint state), a DriftMonitor (drift.py) and,
with a shard spec, a ShardedPath (sharded.py); the loss itself is the functional layer
(functional.py) or, sharded, distributed.py. The functional API and the inference helpers are
re-exported here under their old names.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from torch import nn

from . import checks
from .bucket_shared import bucket_tile_loss
from .checkpoint import CheckpointState
from .cpu_memory import memory_hint
from .dispatch import Choice
from .drift import DriftMonitor
from .frequency import ClassFrequency
from .functional import (  # noqa: F401  (re-exported: the old loss.py names)
    BUCKET_IMPLS,
    SCHEMES,
    _reduce,
    cached_choice,
    check_inputs,
    estimator_loss,
    full_loss,
    sampled_softmax_cross_entropy,
    sampled_softmax_from_candidates,
    valid_rows,
)
from .index.factory import Index, make_index  # noqa: F401
from .index.manager import IndexManager
from .nonfinite import add_nonfinite_class
from .options import (
    FLAT_KWARGS,
    DriftOptions,
    GradOptions,
    IndexOptions,
    LossOptions,
    SamplingOptions,
    ShardSpec,
    check_combination,
    from_kwargs,
)
from .params import init_parameters
from .quality import QualityMonitor
from .retrieval import exact_topk, recall_at_k, rerank_topk  # noqa: F401
from .samplers import make_sampler
from .sharded import ShardedPath, check_shardable


def _option_property(group: str, field: str):
    """The field of an option object under its old flat name; setting it replaces the object
    with a validated copy (options are frozen)."""
    attr = f"{group}_options"

    def set_field(self, value) -> None:
        new = dataclasses.replace(getattr(self, attr), **{field: value})
        if group == "index":  # resolved: search_min_mass "auto" and the generator
            self.manager.options = new.resolved(self.sampling_options, self.sharding)
        else:
            setattr(self, attr, new)

    return property(lambda self: getattr(getattr(self, attr), field), set_field)


class SampledSoftmaxLoss(CheckpointState, nn.Module):
    """Output layer (n classes of dimension d) plus its softmax cross-entropy loss.

    Owns weight (n, d) (or ties to a given Parameter) and an optional bias (n,); holds the
    candidate index (LSH tables or a FAISS index), rebuilt every `refresh_every` training
    steps and on `refresh()`. `forward(hidden (N, d), target (N,))` returns the loss.

    Options come as objects (options.py): loss (LossOptions), sampling (SamplingOptions),
    index (IndexOptions), drift (DriftOptions), grad (GradOptions), shard (ShardSpec: the
    classes sharded over a process group, this rank owning rows [lo, hi); see sharded.py for
    the options that cannot shard). A flat keyword (method=, num_candidates=, sparse_grad=,
    group=, ...) overrides that field of a given object.

    method: "auto" | "full" | "faiss" | "lsh" | "uniform" (no index: S = {target}, T uniform);
    candidate_scheme "auto" (default): one T shared by the batch, its head the most frequent
    targets scored exactly, the rest drawn by their counts (SamplingOptions.resolved,
    frequency.py); num_candidates |S|; num_uniform |T|; lsh_bits K (None: from n, L, |S|),
    lsh_tables L; faiss_index "auto" | "flat" | "ivf" | "ivfpq" (4-bit PQ codes, fast-scan) with
    faiss_nlist / faiss_nprobe; sparse_grad: the weight gradient is a sparse tensor of candidate
    rows (use torch.optim.SGD or SparseAdam); seed fixes the hyperplanes and the uniform draws of
    every step (so runs and resumed runs repeat).

    Checkpoints (state_dict / load_state_dict) resume exactly, and a load that fails changes
    nothing: checkpoint.py.

    target_mass t in (0, 1): at each refresh, the captured softmax mass of the retrieved S
    (its share of the exact non-target mass) is measured on <= 64 rows of the last training
    batch and the clusters / FAISS IVF nprobe set to the smallest rung of 1, 2, 4, ... that
    holds t. method="auto" runs the fastest path by the crossover table whose measured mass
    meets t (default: dispatch.AUTO_TARGET_SHARE of the exact top-(|S| - 1)'s), else exact
    (quality.py); stats() and explain() report the masses, the widths and the probe's cost.
    search_min_mass m (lsh / faiss / auto's sampled path): no search (S = {target}, T alone:
    a flat, untrained softmax gives it nothing to find, and the step costs a shared-negative
    one) until a refresh measures a captured mass >= m; from that refresh on the search runs.

    candidate_scheme="bucket_shared" (method="lsh") scores the whole union of each query's
    buckets plus one uniform T shared by the batch, by bucket_impl "gather" (per-row lists,
    sparse gradients possible), "tiles" (bucket_shared.py: dense tiles per (table, bucket),
    dense gradients, uniform T; bench/bucket_tiles.py) or "auto" (tiles when the gradient is
    dense and T uniform).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        dim: int | None = None,
        *,
        loss: LossOptions | None = None,
        sampling: SamplingOptions | None = None,
        index: IndexOptions | None = None,
        drift: DriftOptions | None = None,
        grad: GradOptions | None = None,
        shard: ShardSpec | None = None,
        bias: bool = False,
        weight: nn.Parameter | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **flat_options,
    ) -> None:
        super().__init__()
        n_given = num_classes if weight is None or num_classes is not None else weight.shape[0]
        if isinstance(flat_options.get("sampler"), torch.Tensor) and n_given is not None:
            # class weights: checked against n here, so the message names their shape
            flat_options["sampler"] = make_sampler(flat_options["sampler"], n_given)
        given = dict(loss=loss, sampling=sampling, index=index, drift=drift, grad=grad)
        opts = from_kwargs(dict(given, shard=shard), flat_options, type(self).__name__)
        self.loss_options: LossOptions = opts["loss"]
        self._scheme_asked = opts["sampling"].scheme  # explain() says why "auto" resolved so
        opts["sampling"] = opts["sampling"].resolved(opts["loss"], opts["shard"], n_given)
        self.sampling_options: SamplingOptions = opts["sampling"]
        self.drift_options: DriftOptions = opts["drift"]
        self.grad_options: GradOptions = opts["grad"]
        index_options: IndexOptions = opts["index"].resolved(opts["sampling"], opts["shard"])
        self.sharding: ShardedPath | None = None
        if opts["shard"] is not None:
            check_shardable(opts)
            if num_classes is None or dim is None:
                raise ValueError("a sharded module needs num_classes and dim")
            checks.check_int_option("num_classes", num_classes, 1)
            checks.check_int_option("dim", dim, 1)
            self.sharding = ShardedPath(opts["shard"], num_classes, opts["sampling"].num_uniform)
        self.weight, self.bias, self.num_classes, self.dim = init_parameters(
            self.sharding, num_classes, dim, bias, weight, device, dtype, index_options.seed
        )
        check_combination(opts["loss"], opts["sampling"], index_options, opts["grad"])
        self.frequency = ClassFrequency(self.num_classes, index_options.refresh_every)
        if self.sampling_options.sampler not in ("uniform", "frequency"):  # checked against n
            make_sampler(self.sampling_options.sampler, self.num_classes)
        rows = self.sharding.rows if self.sharding else self.num_classes
        self.manager = IndexManager(index_options, rows, self.dim, opts["sampling"].num_candidates)
        self.drift_monitor = DriftMonitor(self.drift_options)
        if self.drift_options.refresh_drift is not None:
            self.manager.on_refresh.append(self._record_probe)
        self.quality = QualityMonitor(enabled=self.sharding is None)  # quality.py
        self.manager.on_refresh.append(functools.partial(self.quality.on_refresh, self))
        self.manager.before_build.append(functools.partial(self.quality.before_build, self))
        self.manager.on_resume.append(self.quality.on_resume)
        if index_options.partial_refresh:
            self.weight.register_hook(self.manager.mark_touched)

    # ---- the options and state under their old attribute names ---------------------------
    @property
    def index_options(self) -> IndexOptions:
        return self.manager.options

    for _flat, (_group, _field) in FLAT_KWARGS.items():  # method, num_candidates, seed, ...
        if _group != "shard":
            locals()[_flat] = _option_property(_group, _field)
    del _flat, _group, _field
    index = property(lambda self: self.manager.index)
    index_method = property(lambda self: self.manager.method)
    index_rows = property(lambda self: self.manager.rows)
    steps_at_refresh = property(lambda self: self.manager.steps_at_refresh)
    refresh_count = property(lambda self: self.manager.refresh_count)
    refresh_count_partial = property(lambda self: self.manager.refresh_count_partial)
    last_refresh_seconds = property(lambda self: self.manager.last_refresh_seconds)
    total_refresh_seconds = property(lambda self: self.manager.total_refresh_seconds)
    drift_log = property(lambda self: self.drift_monitor.log)
    refresh_count_drift = property(lambda self: self.drift_monitor.refresh_count)
    last_index_drift = property(lambda self: self.drift_monitor.last_index_drift)

    @property
    def steps(self) -> int:
        return self.manager.steps

    @steps.setter
    def steps(self, value: int) -> None:
        self.manager.steps = value

    def __getattr__(self, name: str):
        # the sharded module's attributes (rank, shard, bounds, comm, ...) from its ShardedPath
        if name in ("group", "rank", "world_size", "bounds", "shard", "uniform_counts", "comm"):
            sharding = self.__dict__.get("sharding")
            if sharding is not None:
                return getattr(sharding, name)
        return super().__getattr__(name)

    # ---- dispatch ------------------------------------------------------------------------
    def choice(self, batch: int = 1, dtype=None, device=None, inference: bool = False) -> Choice:
        """The path this module takes for a batch of `batch` rows: speed_choice, or under
        method="auto" the one the last measured quality chose (quality.py)."""
        speed = self.speed_choice(batch, dtype, device, inference)
        return speed if inference else self.quality.adjust(speed)

    def speed_choice(
        self,
        batch: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
        inference: bool = False,
    ) -> Choice:
        """The path the crossover table picks for `batch` rows (cached per options and
        shape); inference=True: the path `topk` takes."""
        checks.check_module_weight(self.weight, self.bias, self.manager.rows, self.dim)
        dtype = dtype or self.weight.dtype
        device = torch.device(device) if device is not None else self.weight.device
        return cached_choice(
            self.method,
            self.num_candidates,
            self.sampling_options.num_shared_columns,  # T and the exact head
            float(self.label_smoothing),
            self.num_classes,
            self.dim,
            batch,
            dtype,
            device,
            inference,
        )

    def explain(self, batch: int = 1, dtype: torch.dtype | None = None) -> str:
        """A short account of which path runs for this batch size, and why."""
        c = self.choice(batch, dtype)
        return (
            c.explain()
            + self.manager.explain(
                c.method, self.sampling_options, auto=getattr(self, "_scheme_asked", None) == "auto"
            )
            + self.quality.explain(self.index_options, c)
            + memory_hint(c.method, self.weight)
        )

    # ---- index lifecycle -----------------------------------------------------------------
    @torch.no_grad()
    def refresh(self, method: str | None = None, scheduled: bool = False) -> None:
        """Rebuild the candidate index from the current weights (one hashing pass / index
        build; on every rank at the same step for a sharded module)."""
        method = method or self.manager.method or self.choice().method
        self.manager.refresh(self.weight, self.bias, method, scheduled)

    def _record_probe(self) -> None:
        m = self.manager
        self.drift_monitor.record_probe(self.weight, self.bias, m.index, m.method, m.seed)

    @torch.no_grad()
    def index_drift(self) -> float:
        """How far the weights moved since the last refresh, on the probe rows: the fraction of
        (row, table) hash codes that changed (lsh), or the mean relative change of the rows
        (faiss). Reads the result on the host (a sync): done every drift_check_every steps."""
        m = self.manager
        return self.drift_monitor.index_drift(self.weight, self.bias, m.index, m.method)

    def stats(self) -> dict:
        """Refresh counts and costs, captured mass and its probe's cost (quality.py), drift
        figures (and shard and traffic, sharded)."""
        out = dict(self.manager.stats(), refresh_count_partial=self.refresh_count_partial)
        out.update(self.quality.stats(self.index_options))
        out.update(self.drift_monitor.stats())
        if self.sharding is not None:
            out.update(self.sharding.stats())
        return out

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = torch.Generator(device=device)
        if self.sharding is not None:
            gen.manual_seed(self.sharding.generator_key(self.manager.seed, self.steps))
        else:
            gen.manual_seed((self.manager.seed * 1_000_003 + self.steps) % (1 << 63))
        return gen

    # ---- forward / inference -------------------------------------------------------------
    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """hidden: (N, d) float; target: (N,) int64 -> loss (0-d, or (N,) for reduction none)."""
        if self.sharding is not None:
            loss = self._sharded_forward(hidden, target)
        else:
            loss = self._forward(hidden, target)
        if self.training and torch.is_grad_enabled():
            self.steps += 1
        return loss

    def _forward(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # validate -> choose -> maintain the index -> retrieve -> score (reduced) -> drift check
        N, _, _ = check_inputs(hidden, self.weight, target, self.bias, self.loss_options)
        training = self.training and torch.is_grad_enabled()
        method = self._choose(hidden, target, training)
        if method == "full":
            return full_loss(
                hidden, self.weight, self.bias, target, self.loss_options, self.grad_options
            )
        search = self._maintain_index(method, training)
        if search and self._bucket_tiles(hidden):  # the tiles score the bucket union themselves
            loss, retrieved = self._bucket_tile_loss(hidden, target), None
        else:
            retrieved = self._retrieve(hidden, N, search)
            loss = self._estimator_loss(
                hidden, target, retrieved, self.loss_options, self._generator(hidden.device)
            )
        every = self.drift_options.every
        if training and every and self.steps % every == 0:
            if retrieved is None:  # the tiles scored the bucket union: check that set
                retrieved = self.manager.index.union(hidden)
            self._drift_check(hidden, target, retrieved)
        return loss

    def _choose(self, hidden: torch.Tensor, target: torch.Tensor, training: bool) -> str:
        """The path for this batch; in training the quality monitor first takes its probe
        rows (under auto, the path is chosen by measured quality)."""
        if training:
            if self.sampling_options.sampler == "frequency":
                self.frequency.observe(target, self.ignore_index, self.steps)
            self.quality.step(self, hidden, target)
        return self.choice(hidden.shape[0], hidden.dtype, hidden.device).method

    def _maintain_index(self, method: str, training: bool) -> bool:
        """Everything the index needs before a search, in one place: a loaded checkpoint's
        index put back (once), the refresh schedule (method="uniform": no index, a no-op),
        the drift-triggered refresh. Returns whether this step searches (search_min_mass)."""
        m = self.manager
        m.resume(method, self.weight, self.bias)
        if m.stale(method, self.weight):
            self.refresh(method, scheduled=training)
        elif training and self.drift_monitor.refresh_due(
            m.steps - m.steps_at_refresh, self.index_drift
        ):
            self.refresh(method)
            self.drift_monitor.refresh_count += 1
        return method != "uniform" and self.quality.searching(method)

    def _bucket_tiles(self, hidden: torch.Tensor) -> bool:
        return self.sampling_options.scheme == "bucket_shared" and self._use_bucket_tiles(hidden)

    def _retrieve(self, hidden: torch.Tensor, N: int, search: bool) -> torch.Tensor:
        """(N, R) retrieved class ids (-1: empty slot) for the estimator's S."""
        m = self.manager
        if not search:  # S = {target}: nothing retrieved, but a non-finite class joins every
            # row's S, as an index adds it (nonfinite.py); a -1 slot when there is none
            retrieved = torch.empty((N, 0), dtype=torch.int64, device=hidden.device)
            return add_nonfinite_class(retrieved, *m.scan_nonfinite(self.weight, self.bias))
        if self.sampling_options.scheme == "bucket_shared":  # the whole union of its buckets
            return m.index.union(hidden)
        return m.index.search(hidden, self.num_candidates - 1)

    def _sharded_forward(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        lo, sh = self.loss_options, self.sharding
        N, _, _ = checks.check_loss_inputs(hidden, self.weight, target, self.bias)
        checks.check_target_values(target, self.num_classes, lo.ignore_index)
        if lo.validate:  # this rank's rows
            for name, t in (("hidden", hidden), ("weight", self.weight), ("bias", self.bias)):
                if t is not None:
                    checks.check_finite(name, t)
        method = self.choice(N, hidden.dtype, hidden.device).method
        if method == "full":
            return sh.full_loss(hidden, self.weight, self.bias, target, self.num_classes, lo)
        cand_ids, cand_logw = self.shard_candidates(hidden, target, method)
        return sh.estimator_loss(
            hidden, self.weight, self.bias, target, cand_ids, cand_logw, lo, self.grad_options
        )

    def shard_candidates(
        self, hidden: torch.Tensor, target: torch.Tensor, method: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sharded: this rank's (cand_ids local, cand_logw) for this step; forward uses exactly
        these. Refreshes the index first if the schedule says so. target: global ids."""
        method = method or self.choice(hidden.shape[0], hidden.dtype, hidden.device).method
        self.manager.resume(method, self.weight, self.bias)
        if self.manager.stale(method, self.weight):
            self.refresh(method)
        retrieved = self.manager.index.search(hidden, self.num_candidates - 1)
        return self.sharding.candidates(
            retrieved, target, self.ignore_index, self._generator(hidden.device)
        )

    def _use_bucket_tiles(self, hidden: torch.Tensor) -> bool:
        if self.bucket_impl != "auto":
            return self.bucket_impl == "tiles"
        return not self.sparse_grad and self.sampling_options.uniform

    def _bucket_tile_loss(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """bucket_shared scored by dense bucket tiles (bucket_shared.bucket_tile_loss)."""
        valid, safe = valid_rows(target, self.ignore_index)
        loss, lse = bucket_tile_loss(
            hidden,
            self.weight,
            self.bias,
            safe,
            self.index,
            self.num_uniform,
            self._generator(hidden.device),
            return_lse=True,
        )
        if self.z_loss:
            loss = loss + self.z_loss * lse.square()
        return _reduce(loss, valid, self.reduction)  # zeroes the ignored rows

    def _estimator_loss(
        self, hidden, target, retrieved, loss_opts, generator, weight=None, bias=None
    ):
        # bucket_shared: S_i = the bucket union, scored with one shared T; the same
        # estimator as the tiles of bucket_shared.bucket_tile_loss (tested equal)
        W = self.weight if weight is None else weight
        b = self.bias if weight is None else bias
        so, go = self.sampling_options, self.grad_options
        if so.sampler == "frequency":  # the proposal built from the counted targets
            so = dataclasses.replace(so, sampler=self.frequency.sampler(hidden.device))
        scheme = "shared_samples" if so.scheme == "bucket_shared" else so.scheme
        return estimator_loss(
            hidden, W, target, retrieved, b, loss_opts, so, go, generator, scheme=scheme
        )

    def _drift_check(self, hidden, target, retrieved) -> dict:
        """Exact vs approximate loss, and the cosine of their gradients w.r.t. hidden, on the
        first drift_rows rows (drift.DriftMonitor.check)."""
        W = self.weight.detach()
        b = self.bias.detach() if self.bias is not None else None
        approx_opts = dataclasses.replace(self.loss_options, reduction="sum", z_loss=0.0)
        exact_opts = dataclasses.replace(approx_opts, label_smoothing=0.0, validate=False)

        def approx_fn(h, y, k):
            gen = self._generator(h.device)
            return self._estimator_loss(h, y, retrieved[:k], approx_opts, gen, W, b)

        def exact_fn(h, y):
            return full_loss(h, W, b, y, exact_opts, GradOptions())

        return self.drift_monitor.check(
            self.steps, hidden, target, self.ignore_index, approx_fn, exact_fn
        )

    @torch.no_grad()
    def topk(
        self, hidden: torch.Tensor, k: int, exact: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k classes per row: (scores (N, k) float32, ids (N, k) int64).

        Approximate paths retrieve max(|S|, k) candidates from the index and rerank them by
        exact logits (ids -1 where fewer than k were found); exact=True or the full path
        scores every class (chunked). Sharded: each rank's top-k, all-gathered and merged.
        """
        if self.sharding is None and (hidden.dim() != 2 or hidden.shape[1] != self.dim):
            raise ValueError(f"hidden must be (N, {self.dim}), got {tuple(hidden.shape)}")
        checks.check_int_option("k", k, 1, self.num_classes)
        method = self.choice(hidden.shape[0], hidden.dtype, hidden.device, inference=True).method
        if exact or method in ("full", "uniform"):  # uniform: no index to retrieve from
            s, i = exact_topk(hidden, self.weight, k, self.bias)
        else:
            self.manager.resume(method, self.weight, self.bias)
            if not self.manager.usable(method, self.weight):
                self.refresh(method)
            cand = self.index.search(hidden, max(self.num_candidates, k))
            s, i = rerank_topk(hidden, self.weight, cand, k, self.bias)
        if self.sharding is not None:
            return self.sharding.merge_topk(s, i, k)
        return s, i

    def extra_repr(self) -> str:
        text = f"num_classes={self.num_classes}, dim={self.dim}, "
        if self.sharding is not None:
            sh = self.sharding
            text += f"shard={sh.shard}, rank={sh.rank}/{sh.world_size}, "
        text += (
            f"method={self.method!r}, num_candidates={self.num_candidates}, "
            f"num_uniform={self.num_uniform}"
        )
        if self.sharding is not None:
            text += f" (this shard {self.sharding.uniform_counts[self.sharding.rank]})"
        return text + f", bias={self.bias is not None}, sparse_grad={self.sparse_grad}"


class ShardedSampledSoftmaxLoss(SampledSoftmaxLoss):
    """SampledSoftmaxLoss(n, d, shard=ShardSpec(group, bounds), ...) under its old name and
    signature: num_classes and dim required, group= and bounds= as keywords."""

    def __init__(self, num_classes: int, dim: int, *, group=None, bounds=None, **options):
        shard = options.pop("shard", None) or ShardSpec(group, bounds)
        super().__init__(num_classes, dim, shard=shard, **options)
