"""Public API: the functional loss and the nn.Module output layer + loss.

Both validate their inputs in Python (shapes, dtypes, devices, options, label range) before
any kernel runs, then run one of three paths on one estimator:

  full   exact cross-entropy over all n classes, in chunks (no (N, n) logits tensor)
  faiss  S = top-|S| classes by inner product from a FAISS index, + |T| uniform samples
  lsh    S = union of the query's SimHash buckets over L tables, ranked and capped, + T

Semantics follow torch.nn.functional.cross_entropy: reduction none/mean/sum; rows whose target
equals ignore_index get zero loss and zero gradient; "mean" divides by the number of
non-ignored rows, so a batch with every row ignored gives NaN for "mean" (as torch does) and 0
for "sum". Non-finite inputs propagate as in torch unless validate=True, which raises instead.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import deque
from collections.abc import Callable

import torch
from torch import nn

from . import candidates as _cand
from . import checks, ops
from . import custom_ops as _custom
from .autograd import ChunkedCrossEntropyFunction, SampledSoftmaxFunction, SharedCandidatesFunction
from .bucket_tiles import bucket_tile_loss
from .dispatch import Choice, choose_method
from .faiss_index import FaissIndex, default_nlist
from .lsh import LSHIndex, default_num_bits
from .samplers import Sampler, make_sampler

Index = LSHIndex | FaissIndex


def _reduce(loss_rows: torch.Tensor, row_valid: torch.Tensor, reduction: str) -> torch.Tensor:
    loss_rows = torch.where(row_valid, loss_rows, torch.zeros_like(loss_rows))
    if reduction == "none":
        return loss_rows
    total = loss_rows.sum()
    if reduction == "sum":
        return total
    return total / row_valid.sum()


def _check_common(
    hidden,
    weight,
    target,
    bias,
    reduction,
    ignore_index,
    label_smoothing,
    num_candidates,
    num_uniform,
    validate,
):
    N, n, d = checks.check_loss_inputs(hidden, weight, target, bias)
    checks.check_loss_options(
        reduction=reduction,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        num_candidates=num_candidates,
        num_uniform=num_uniform,
    )
    checks.check_target_values(target, n, ignore_index)
    if validate:
        checks.check_finite("hidden", hidden)
        checks.check_finite("weight", weight)
        if bias is not None:
            checks.check_finite("bias", bias)
    return N, n, d


SCHEMES = ("per_example", "shared_samples", "batch_union", "bucket_shared")
BUCKET_IMPLS = ("auto", "gather", "tiles")


def _is_uniform(sampler) -> bool:
    return isinstance(sampler, str) and sampler == "uniform"


def _check_explicit(hidden, weight, target, retrieved, bias, reduction, ignore_index, num_uniform):
    """The explicit-candidate entry point's own checks (it is public: bias length, label
    range and the retrieved ids' shape get a ValueError naming the argument, not an
    IndexError from a gather)."""
    N, n, _ = checks.check_loss_inputs(hidden, weight, target, bias)
    checks.check_loss_options(
        reduction=reduction, ignore_index=ignore_index, num_uniform=num_uniform
    )
    checks.check_tensor("retrieved", retrieved)
    if retrieved.dim() != 2 or retrieved.shape[0] != N or retrieved.dtype.is_floating_point:
        raise ValueError(
            f"retrieved must be (N={N}, R) integer class ids, got shape "
            f"{tuple(retrieved.shape)}, dtype {retrieved.dtype}"
        )
    checks.check_target_values(target, n, ignore_index)


_WARNED_NO_UNIFORM = False


def _warn_no_uniform(n: int, width: int) -> None:
    """num_uniform=0 with |S| < n: a softmax over S only, no longer an estimate of the full
    loss. Allowed (e.g. for a fixed candidate list), said once per process."""
    global _WARNED_NO_UNIFORM
    if width < n and not _WARNED_NO_UNIFORM and not torch.compiler.is_compiling():
        _WARNED_NO_UNIFORM = True
        warnings.warn(
            f"num_uniform=0 with |S| <= {width} of n={n} classes: the loss is a softmax over "
            "the retrieved candidates only, not an estimate of the full softmax loss (it is "
            "biased low); set num_uniform > 0 for the estimator",
            stacklevel=3,
        )


def sampled_softmax_from_candidates(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    retrieved: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    num_uniform: int = 512,
    reduction: str = "mean",
    ignore_index: int = -100,
    sparse_grad: bool = False,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    scheme: str = "per_example",
    sampler: str | torch.Tensor | Sampler = "uniform",
    remove_accidental_hits: bool = True,
    z_loss: float = 0.0,
    softcap: float = 0.0,
) -> torch.Tensor:
    """The estimator loss for given retrieved classes S (the target is added, T is drawn).

    hidden: (N, d) float; weight: (n, d); target: (N,) int; retrieved: (N, R) int64 class ids,
    -1 for empty slots (duplicates and the target are dropped). Shapes, bias length and the
    label range are checked (ValueError naming the argument).

    scheme: "per_example" (each row its own S and T, gathered: the seeds' method),
    "shared_samples" (own S, one T shared by the batch, scored as a dense product),
    "batch_union" (S = union of all rows' S and targets, + shared T, all dense).
    sampler: proposal of T: "uniform" (per-example scheme: uniform over the complement of S,
    exact weights), "log_uniform", or class weights (n,); non-uniform proposals get the log-Q
    correction, and draws that hit S get weight 0 unless remove_accidental_hits=False.
    num_uniform is |T| whatever the proposal; num_uniform=0 makes the loss a softmax over S
    only, no longer an estimate of the full loss (biased low unless S covers every class):
    allowed, with a warning once. z_loss: adds z_loss * lse^2 per row, lse the
    (estimated) log partition function (PaLM's z-loss). softcap c > 0: logits c tanh(z / c)
    (per-example scheme; runs the PyTorch twin, also on CUDA: no kernel implements it yet).
    """
    if softcap and scheme != "per_example":
        raise ValueError(f"softcap is supported with scheme='per_example' only, got {scheme!r}")
    if scheme not in SCHEMES[:3]:
        raise ValueError(
            f"scheme must be one of {SCHEMES[:3]} here ('bucket_shared' needs the LSH index: "
            f"SampledSoftmaxLoss(method='lsh', candidate_scheme='bucket_shared')), got {scheme!r}"
        )
    n = weight.shape[0]
    _check_explicit(hidden, weight, target, retrieved, bias, reduction, ignore_index, num_uniform)
    if num_uniform == 0:
        _warn_no_uniform(n, retrieved.shape[1] + 1)
    target = target.long()  # uint8/int16: ignore_index would wrap in the comparison
    row_valid = target != ignore_index
    safe_target = torch.where(row_valid, target, torch.zeros_like(target))
    # log-weights in the accumulation dtype: float64 inputs stay float64 end to end
    logw_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    if scheme == "per_example":
        if isinstance(sampler, str) and sampler == "uniform":
            cand_ids, cand_logw = _cand.build_candidates(
                retrieved, safe_target, n, num_uniform, generator, logw_dtype=logw_dtype
            )
        else:
            cand_ids, cand_logw = _cand.build_candidates_q(
                retrieved,
                safe_target,
                n,
                num_uniform,
                make_sampler(sampler, n),
                generator,
                remove_accidental_hits,
                logw_dtype=logw_dtype,
            )
        if torch.compiler.is_compiling():  # opaque custom op: no graph break (dense grads)
            if sparse_grad or z_loss or softcap:
                raise ValueError(
                    "sparse_grad, z_loss and softcap are not supported inside torch.compile"
                )
            loss_rows = _custom.sampled_softmax_fwd(
                hidden, weight, bias, cand_ids, cand_logw, safe_target
            )[0]
        else:
            loss_rows = SampledSoftmaxFunction.apply(
                hidden,
                weight,
                bias,
                cand_ids,
                cand_logw,
                safe_target,
                sparse_grad,
                deterministic,
                float(z_loss),
                float(softcap),
            )
    else:
        s_ids, s_logw, sh_ids, sh_logw = _cand.build_shared_candidates(
            retrieved,
            safe_target,
            n,
            num_uniform,
            make_sampler(sampler, n),
            generator,
            union=scheme == "batch_union",
            remove_accidental_hits=remove_accidental_hits,
            logw_dtype=logw_dtype,
        )
        loss_rows = SharedCandidatesFunction.apply(
            hidden,
            weight,
            bias,
            s_ids,
            s_logw,
            sh_ids,
            sh_logw,
            safe_target,
            sparse_grad,
            float(z_loss),
        )
    return _reduce(loss_rows, row_valid, reduction)


_CHOICES: dict[tuple, Choice] = {}


def _cached_choice(*key) -> Choice:
    """choose_method once per shape and options (the table is read once, not per step)."""
    choice = _CHOICES.get(key)
    if choice is None:
        choice = _CHOICES[key] = choose_method(*key)
    return choice


def _full_loss(
    hidden,
    weight,
    bias,
    target,
    reduction,
    ignore_index,
    label_smoothing,
    z_loss=0.0,
    softcap=0.0,
    sparse_grad=False,
):
    target = target.long()  # uint8/int16: ignore_index would wrap in the comparison
    row_valid = target != ignore_index
    safe_target = torch.where(row_valid, target, torch.zeros_like(target))
    if torch.compiler.is_compiling():  # opaque custom op: no graph break
        if z_loss or softcap:
            raise ValueError("z_loss and softcap are not supported inside torch.compile")
        loss_rows = _custom.chunked_ce_fwd(
            hidden, weight, bias, safe_target, float(label_smoothing)
        )[0]
    else:
        loss_rows = ChunkedCrossEntropyFunction.apply(
            hidden,
            weight,
            bias,
            safe_target,
            float(label_smoothing),
            float(z_loss),
            float(softcap),
            bool(sparse_grad),
        )
    return _reduce(loss_rows, row_valid, reduction)


def make_index(
    method: str,
    n: int,
    d: int,
    num_candidates: int,
    *,
    lsh_bits: int | None = None,
    lsh_tables: int = 8,
    faiss_index: str = "auto",
    faiss_nlist: int | None = None,
    faiss_nprobe: int = 16,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Index:
    """An unbuilt index for `method` ("lsh" or "faiss") with the library's defaults."""
    if method == "lsh":
        K = lsh_bits if lsh_bits is not None else default_num_bits(n, lsh_tables, num_candidates)
        return LSHIndex(d, K, lsh_tables, seed=seed, device=device)
    if method == "faiss":
        kind = faiss_index
        if kind == "auto":
            kind = "ivf" if n >= 100_000 else "flat"
        return FaissIndex(kind, nlist=faiss_nlist, nprobe=faiss_nprobe, seed=seed)
    raise ValueError(f"no index for method {method!r}")


def sampled_softmax_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    method: str = "auto",
    index: Index | None = None,
    num_candidates: int = 512,
    num_uniform: int = 512,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float = 0.0,
    sparse_grad: bool = False,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    validate: bool = False,
    scheme: str = "per_example",
    sampler: str | torch.Tensor | Sampler = "uniform",
    remove_accidental_hits: bool = True,
) -> torch.Tensor:
    """Softmax cross-entropy of logits hidden @ weight.T (+ bias), exact or sampled.

    hidden: (N, d) float32/float16/bfloat16; weight: (n, d); target: (N,) int64;
    bias: (n,) or None. method: "auto" | "full" | "faiss" | "lsh". For the sampled paths
    pass the `index` you keep (LSHIndex / FaissIndex, built on `weight`); without one an
    index is built for this call alone, which costs a full hashing pass or index build.
    num_candidates: |S| including the target; num_uniform: |T|. z_loss adds z_loss * lse^2
    per row (lse: the exact or estimated log partition function). scheme, sampler and
    remove_accidental_hits: see sampled_softmax_from_candidates. Returns a 0-d float32
    tensor (or (N,) for reduction="none").
    """
    _check_z_loss(z_loss)
    _check_softcap(softcap)
    ignore_index = checks.as_ignore_index(ignore_index)
    N, n, d = _check_common(
        hidden,
        weight,
        target,
        bias,
        reduction,
        ignore_index,
        label_smoothing,
        num_candidates,
        num_uniform,
        validate,
    )
    choice = _cached_choice(
        method,
        n,
        d,
        N,
        hidden.dtype,
        hidden.device,
        num_candidates,
        num_uniform,
        float(label_smoothing),
    )
    if choice.method == "full":
        return _full_loss(
            hidden,
            weight,
            bias,
            target,
            reduction,
            ignore_index,
            label_smoothing,
            z_loss,
            softcap,
            sparse_grad,
        )
    if index is None:
        index = make_index(choice.method, n, d, num_candidates, device=weight.device)
    if not index.built:
        index.build(weight, bias)
    if index.n != n:
        raise ValueError(f"index was built over {index.n} classes but weight has n={n}")
    retrieved = index.search(hidden, num_candidates - 1)
    return sampled_softmax_from_candidates(
        hidden,
        weight,
        target,
        retrieved,
        bias,
        num_uniform=num_uniform,
        reduction=reduction,
        ignore_index=ignore_index,
        sparse_grad=sparse_grad,
        deterministic=deterministic,
        generator=generator,
        z_loss=z_loss,
        softcap=softcap,
        scheme=scheme,
        sampler=sampler,
        remove_accidental_hits=remove_accidental_hits,
    )


def _check_softcap(softcap: float) -> float:
    if isinstance(softcap, bool) or not isinstance(softcap, (int, float)) or not softcap >= 0:
        raise ValueError(f"softcap must be a float >= 0 (0: off), got {softcap!r}")
    return float(softcap)


def _check_z_loss(z_loss: float) -> float:
    if isinstance(z_loss, bool) or not isinstance(z_loss, (int, float)) or not z_loss >= 0:
        raise ValueError(f"z_loss must be a float >= 0, got {z_loss!r}")
    return float(z_loss)


def exact_topk(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    k: int,
    bias: torch.Tensor | None = None,
    chunk: int = 1 << 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k logits over all classes, in chunks: (scores (N, k) float32, ids (N, k) int64)."""
    N, n = hidden.shape[0], weight.shape[0]
    k = min(k, n)
    best_s = torch.full((N, 0), float("-inf"), device=hidden.device)
    best_i = torch.zeros((N, 0), dtype=torch.int64, device=hidden.device)
    h = hidden.float()
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        z = h @ weight[lo:hi].float().T
        if bias is not None:
            z = z + bias[lo:hi].float()
        s = torch.cat([best_s, z], dim=1)
        i = torch.cat([best_i, torch.arange(lo, hi, device=hidden.device).expand(N, -1)], dim=1)
        best_s, pos = torch.topk(s, min(k, s.shape[1]), dim=1)
        best_i = torch.gather(i, 1, pos)
    return best_s, best_i


def rerank_topk(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    candidates: torch.Tensor,
    k: int,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact scores of the candidate ids (N, R) (-1 = empty), top-k of them: (scores, ids)."""
    valid = candidates >= 0
    safe = candidates.clamp_min(0)
    z = torch.bmm(weight[safe].float(), hidden.float().unsqueeze(2)).squeeze(2)
    if bias is not None:
        z = z + bias[safe].float()
    z = torch.where(valid, z, torch.full_like(z, float("-inf")))
    s, pos = torch.topk(z, min(k, z.shape[1]), dim=1)
    ids = torch.gather(candidates, 1, pos)
    return s, torch.where(torch.isfinite(s), ids, torch.full_like(ids, -1))


def recall_at_k(approx_ids: torch.Tensor, exact_ids: torch.Tensor) -> float:
    """Mean fraction of each row's exact ids found among its approximate ids."""
    if exact_ids.numel() == 0:
        return float("nan")
    hit = (exact_ids.unsqueeze(2) == approx_ids.unsqueeze(1)).any(dim=2)
    return float(hit.float().mean())


class IndexedLayerMixin:
    """What SampledSoftmaxLoss and the sharded module share: the method choice per shape, the
    candidate index over this module's rows (`index_rows`), its refresh schedule (every
    `refresh_every` training steps, on `refresh()`, after a device move, after a checkpoint
    load) and the checkpointed counters. The host module sets the option attributes.
    """

    index_rows: int  # classes this module's index covers (all n, or one shard)

    def _init_index_state(self) -> None:
        self.index: Index | None = None
        self.index_method: str | None = None
        self.steps = 0  # training steps taken (forward calls with grad, in training mode)
        self.steps_at_refresh = -1
        self._pending_steps_at_refresh: int | None = None
        self.refresh_count = 0
        self.last_refresh_seconds = float("nan")
        self.total_refresh_seconds = 0.0
        self._index_device: torch.device | None = None
        self._choices: dict[tuple, Choice] = {}

    def choice(
        self,
        batch: int = 1,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
        inference: bool = False,
    ) -> Choice:
        """The path this module takes for a batch of `batch` rows (cached per shape);
        inference=True: the path `topk` takes."""
        dtype = dtype or self.weight.dtype
        device = torch.device(device) if device is not None else self.weight.device
        key = (batch, dtype, device.type, inference)
        if key not in self._choices:
            self._choices[key] = choose_method(
                self.method,
                self.num_classes,
                self.dim,
                batch,
                dtype,
                device,
                self.num_candidates,
                self.num_uniform,
                self.label_smoothing,
                inference=inference,
            )
        return self._choices[key]

    def explain(self, batch: int = 1, dtype: torch.dtype | None = None) -> str:
        """A short account of which path runs for this batch size, and why."""
        c = self.choice(batch, dtype)
        text = c.explain()
        rows = self.index_rows
        if c.method == "lsh":
            K = self.lsh_bits or default_num_bits(rows, self.lsh_tables, self.num_candidates)
            text += f"; lsh K={K} bits x L={self.lsh_tables} tables"
        if c.method == "faiss":
            kind = (
                self.faiss_index
                if self.faiss_index != "auto"
                else ("ivf" if rows >= 100_000 else "flat")
            )
            text += f"; faiss index {kind}"
            if kind == "ivf":
                text += f" nlist={self.faiss_nlist or default_nlist(rows)}"
        if c.method != "full" and self.num_uniform == 0 and self.num_candidates < rows:
            text += (
                "; num_uniform=0: a softmax over the retrieved S only, not an estimate of the "
                "full loss"
            )
        return text

    @torch.no_grad()
    def refresh(self, method: str | None = None) -> None:
        """Rebuild the candidate index from the current weights (one hashing pass / index
        build; on every rank at the same step for a sharded module)."""
        method = method or self.index_method or self.choice().method
        if method not in ("lsh", "faiss"):
            return
        t0 = time.perf_counter()
        if self.index is None or self.index_method != method:
            self.index = make_index(
                method,
                self.index_rows,
                self.dim,
                self.num_candidates,
                lsh_bits=self.lsh_bits,
                lsh_tables=self.lsh_tables,
                faiss_index=self.faiss_index,
                faiss_nlist=self.faiss_nlist,
                faiss_nprobe=self.faiss_nprobe,
                seed=self.seed,
                device=self.weight.device,
            )
            self.index_method = method
        if not self._partial_refresh(method):
            self.index.build(self.weight, self.bias)
        self._after_refresh()
        self.last_refresh_seconds = time.perf_counter() - t0
        self.total_refresh_seconds += self.last_refresh_seconds
        self.refresh_count += 1
        # After a checkpoint load the refresh schedule continues where the saved run was.
        pending = self._pending_steps_at_refresh
        self.steps_at_refresh = self.steps if pending is None else pending
        self._pending_steps_at_refresh = None
        self._index_device = self.weight.device

    def _after_refresh(self) -> None:
        """Hook: work that belongs to a rebuild (the drift probe of SampledSoftmaxLoss)."""

    def _partial_refresh(self, method: str) -> bool:
        """Hook: refresh by re-hashing only changed rows; False means rebuild everything."""
        return False

    def _index_stale(self, method: str) -> bool:
        return (
            self._index_missing(method)
            or self.steps_at_refresh < 0
            or self.steps - self.steps_at_refresh >= self.refresh_every
        )

    def _index_missing(self, method: str) -> bool:
        """No usable index for `method` (none yet, another method, or the weights moved)."""
        return (
            self.index is None
            or self.index_method != method
            or self._index_device != self.weight.device
        )

    def _refresh_stats(self) -> dict:
        return dict(
            steps=self.steps,
            refresh_count=self.refresh_count,
            last_refresh_seconds=self.last_refresh_seconds,
            total_refresh_seconds=self.total_refresh_seconds,
            index=self.index_method,
        )

    _LOAD_ATTRS = (
        "steps",
        "refresh_count",
        "seed",
        "index",
        "index_method",
        "steps_at_refresh",
        "_pending_steps_at_refresh",
        "lsh_bits",
        "lsh_tables",
    )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ):
        """torch calls set_extra_state even when this module's tensors failed to load (a
        size mismatch is reported at the end): put the counters, seed and index back then,
        so a failed load changes none of them."""
        saved = {a: getattr(self, a) for a in self._LOAD_ATTRS if hasattr(self, a)}
        before = len(errors)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )
        if len(errors) > before:
            for a, v in saved.items():
                setattr(self, a, v)

    def _index_state(self) -> dict:
        return dict(
            steps=self.steps,
            steps_at_refresh=self.steps_at_refresh,
            refresh_count=self.refresh_count,
            seed=self.seed,
        )

    def _load_index_state(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.refresh_count = int(state["refresh_count"])
        self.seed = int(state["seed"])
        # The index is rebuilt from the loaded weights (same seed -> same hyperplanes) at
        # the next use, never reused stale; the refresh schedule continues where it was.
        self.index, self.index_method, self.steps_at_refresh = None, None, -1
        self._pending_steps_at_refresh = int(state["steps_at_refresh"])


class SampledSoftmaxLoss(IndexedLayerMixin, nn.Module):
    """Output layer (n classes of dimension d) plus its softmax cross-entropy loss.

    Owns weight (n, d) (or ties to a given Parameter) and an optional bias (n,); holds the
    candidate index (LSH tables or a FAISS index), rebuilt every `refresh_every` training
    steps and on `refresh()`. `forward(hidden (N, d), target (N,))` returns the loss.

    method: "auto" | "full" | "faiss" | "lsh"; num_candidates |S| (with the target);
    num_uniform |T|; lsh_bits K (None: from n, L, |S|), lsh_tables L; faiss_index "auto" |
    "flat" | "ivf" with faiss_nlist / faiss_nprobe; sparse_grad: the weight gradient is a
    sparse tensor of candidate rows (use torch.optim.SGD or SparseAdam); seed fixes the
    hyperplanes and the uniform draws of every step (so runs and resumed runs repeat).

    candidate_scheme="bucket_shared" (method="lsh") scores the whole union of each query's
    buckets plus one uniform T shared by the batch. bucket_impl picks how: "gather" (per-row
    candidate lists, sparse gradients possible), "tiles" (bucket_tiles.py: one dense tile per
    (table, bucket), dense gradients, uniform T only), or "auto" = tiles when the gradient
    is dense and the sampler uniform (Triton kernels on CUDA, twins on CPU), gather
    otherwise. The gather pads every row to L x the largest bucket read: on CPU at n = 10^5,
    N = 256 it took 37.8 s per step against 1.03 s for the tiles (bench/bucket_tiles.py).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        dim: int | None = None,
        *,
        method: str = "auto",
        num_candidates: int = 512,
        num_uniform: int = 512,
        lsh_bits: int | None = None,
        lsh_tables: int = 8,
        faiss_index: str = "auto",
        faiss_nlist: int | None = None,
        faiss_nprobe: int = 16,
        refresh_every: int = 100,
        reduction: str = "mean",
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: float = 0.0,
        bias: bool = False,
        sparse_grad: bool = False,
        deterministic: bool = False,
        seed: int = 0,
        validate: bool = False,
        candidate_scheme: str = "per_example",
        bucket_impl: str = "auto",
        sampler: str | torch.Tensor | Sampler = "uniform",
        remove_accidental_hits: bool = True,
        drift_every: int | None = None,
        drift_rows: int = 8,
        drift_hook: Callable[[dict], None] | None = None,
        refresh_drift: float | None = None,
        drift_check_every: int = 10,
        drift_probe_rows: int = 1024,
        partial_refresh: bool = False,
        weight: nn.Parameter | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if weight is not None:
            if not isinstance(weight, nn.Parameter) or weight.dim() != 2:
                raise ValueError("weight must be a 2-D nn.Parameter (n, d) to tie to")
            if num_classes is not None and num_classes != weight.shape[0]:
                raise ValueError(f"num_classes={num_classes} but weight has n={weight.shape[0]}")
            if dim is not None and dim != weight.shape[1]:
                raise ValueError(f"dim={dim} but weight has d={weight.shape[1]}")
            num_classes, dim = weight.shape
            self.weight = weight
        else:
            if num_classes is None or dim is None:
                raise ValueError("give num_classes and dim, or a weight Parameter to tie to")
            checks.check_int_option("num_classes", num_classes, 1)
            checks.check_int_option("dim", dim, 1)
            bound = 1.0 / math.sqrt(dim)
            w = torch.empty(num_classes, dim, device=device, dtype=dtype).uniform_(-bound, bound)
            self.weight = nn.Parameter(w)
        self.bias = (
            nn.Parameter(
                torch.zeros(num_classes, device=self.weight.device, dtype=self.weight.dtype)
            )
            if bias
            else None
        )
        checks.check_loss_options(
            reduction=reduction,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            num_candidates=num_candidates,
            num_uniform=num_uniform,
        )
        checks.check_index_options(
            method=method,
            lsh_bits=lsh_bits,
            lsh_tables=lsh_tables,
            faiss_index=faiss_index,
            refresh_every=refresh_every,
        )
        self.num_classes, self.dim = int(num_classes), int(dim)
        self.method = method
        self.num_candidates, self.num_uniform = num_candidates, num_uniform
        self.lsh_bits, self.lsh_tables = lsh_bits, lsh_tables
        self.faiss_index = faiss_index
        self.faiss_nlist, self.faiss_nprobe = faiss_nlist, faiss_nprobe
        self.refresh_every = refresh_every
        self.reduction, self.ignore_index = reduction, checks.as_ignore_index(ignore_index)
        self.label_smoothing = label_smoothing
        self.z_loss = _check_z_loss(z_loss)
        self.softcap = _check_softcap(softcap)
        self.sparse_grad, self.deterministic = sparse_grad, deterministic
        self.seed, self.validate = seed, validate
        if candidate_scheme not in SCHEMES:
            raise ValueError(f"candidate_scheme must be one of {SCHEMES}, got {candidate_scheme!r}")
        if candidate_scheme == "bucket_shared" and (method != "lsh" or softcap):
            raise ValueError(
                "candidate_scheme='bucket_shared' needs the lsh index (method='lsh') and does "
                "not support softcap yet"
            )
        if bucket_impl not in BUCKET_IMPLS:
            raise ValueError(f"bucket_impl must be one of {BUCKET_IMPLS}, got {bucket_impl!r}")
        if bucket_impl == "tiles" and (sparse_grad or not _is_uniform(sampler)):
            raise ValueError(
                "bucket_impl='tiles' gives dense gradients with a uniform T: it takes neither "
                "sparse_grad=True nor a non-uniform sampler (use bucket_impl='gather')"
            )
        self.candidate_scheme = candidate_scheme
        self.bucket_impl = bucket_impl
        self.remove_accidental_hits = remove_accidental_hits
        sampler_obj = make_sampler(sampler, num_classes)  # validates names and weight shapes
        self.sampler = sampler if isinstance(sampler, str) else sampler_obj
        if drift_every is not None:
            checks.check_int_option("drift_every", drift_every, 1)
        checks.check_int_option("drift_rows", drift_rows, 1)
        checks.check_int_option("drift_check_every", drift_check_every, 1)
        checks.check_int_option("drift_probe_rows", drift_probe_rows, 1)
        if refresh_drift is not None and not refresh_drift > 0:
            raise ValueError(f"refresh_drift must be a positive float, got {refresh_drift!r}")
        self.drift_every, self.drift_rows, self.drift_hook = drift_every, drift_rows, drift_hook
        self.refresh_drift, self.drift_check_every = refresh_drift, drift_check_every
        self.drift_probe_rows = drift_probe_rows
        self.drift_log: deque[dict] = deque(maxlen=1000)
        self.refresh_count_drift = 0
        self.last_index_drift = float("nan")
        self._probe_ids: torch.Tensor | None = None
        self._probe_ref: torch.Tensor | None = None
        if partial_refresh and not sparse_grad:
            raise ValueError(
                "partial_refresh needs sparse_grad=True (it re-hashes the rows that "
                "received a sparse gradient since the last refresh)"
            )
        self.partial_refresh = partial_refresh
        self.refresh_count_partial = 0
        self._touched: torch.Tensor | None = None  # rows with a gradient since the last refresh
        self._touched_all = False
        if partial_refresh:
            self.weight.register_hook(self._mark_touched)
        self.index_rows = self.num_classes
        self._init_index_state()

    # ---- index lifecycle -----------------------------------------------------------------
    def _after_refresh(self) -> None:
        if self.refresh_drift is not None:
            self._record_probe()
        self._touched, self._touched_all = None, False

    def _mark_touched(self, grad: torch.Tensor) -> None:
        """Weight-gradient hook: remember which rows an optimizer step may change."""
        if not grad.is_sparse:  # a dense gradient (e.g. a tied embedding): every row
            self._touched_all = True
            return
        if self._touched is None:
            self._touched = torch.zeros(self.num_classes, dtype=torch.bool, device=grad.device)
        self._touched[grad._indices()[0]] = True

    def _partial_refresh(self, method: str) -> bool:
        """Re-hash only the rows that received a gradient since the last refresh, when they
        are at most half the classes and no row outgrew the MIPS scale (LSHIndex.update_rows);
        equal to a full rebuild on the same weights, minus the hashing of unchanged rows."""
        if not (
            self.partial_refresh
            and method == "lsh"
            and self.index is not None
            and self.index.built
            and not self._touched_all
            and self._touched is not None
            and self._index_device == self.weight.device
        ):
            return False
        rows = self._touched.nonzero().flatten()  # one host sync per refresh
        if rows.numel() > self.num_classes // 2:
            return False
        if not self.index.update_rows(self.weight, self.bias, rows):
            return False
        self.refresh_count_partial += 1
        return True

    def _probe_state(self) -> torch.Tensor:
        """What drift is measured on: the probe rows' hash codes (lsh) or their weights (faiss)."""
        rows = self.weight.detach()[self._probe_ids]
        if self.index_method == "lsh":
            b = self.bias.detach()[self._probe_ids] if self.bias is not None else None
            return ops.simhash_codes(rows, self.index.hyperplanes, b, self.index.max_norm)
        return rows.float().clone()

    def _record_probe(self) -> None:
        gen = torch.Generator().manual_seed(self.seed + 17)
        k = min(self.drift_probe_rows, self.num_classes)
        self._probe_ids = torch.randperm(self.num_classes, generator=gen)[:k].to(self.weight.device)
        self._probe_ref = self._probe_state()

    @torch.no_grad()
    def index_drift(self) -> float:
        """How far the weights moved since the last refresh, on the probe rows: the fraction of
        (row, table) hash codes that changed (lsh), or the mean relative change of the rows
        (faiss). Reads the result on the host (a sync): done every drift_check_every steps."""
        if self._probe_ids is None or self.index is None:
            return float("nan")
        now = self._probe_state()
        if self.index_method == "lsh":
            drift = (now != self._probe_ref).float().mean()
        else:
            drift = (
                (now - self._probe_ref).norm(dim=1) / self._probe_ref.norm(dim=1).clamp_min(1e-12)
            ).mean()
        self.last_index_drift = float(drift)
        return self.last_index_drift

    def stats(self) -> dict:
        """Refresh counts and costs, drift figures."""
        return dict(
            self._refresh_stats(),
            refresh_count_drift=self.refresh_count_drift,
            refresh_count_partial=self.refresh_count_partial,
            last_index_drift=self.last_index_drift,
            drift_checks=len(self.drift_log),
        )

    def _generator(self, device: torch.device) -> torch.Generator:
        gen = torch.Generator(device=device)
        gen.manual_seed((self.seed * 1_000_003 + self.steps) % (1 << 63))
        return gen

    # ---- forward / inference -------------------------------------------------------------
    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """hidden: (N, d) float; target: (N,) int64 -> loss (0-d, or (N,) for reduction none)."""
        self._check_weight_size()
        N, n, d = _check_common(
            hidden,
            self.weight,
            target,
            self.bias,
            self.reduction,
            self.ignore_index,
            self.label_smoothing,
            self.num_candidates,
            self.num_uniform,
            self.validate,
        )
        method = self.choice(N, hidden.dtype, hidden.device).method
        training = self.training and torch.is_grad_enabled()
        if method == "full":
            loss = _full_loss(
                hidden,
                self.weight,
                self.bias,
                target,
                self.reduction,
                self.ignore_index,
                self.label_smoothing,
                self.z_loss,
                self.softcap,
                self.sparse_grad,
            )
        else:
            if self._index_stale(method):
                self.refresh(method)
            elif (
                training
                and self.refresh_drift is not None
                and (self.steps - self.steps_at_refresh) % self.drift_check_every == 0
                and self.index_drift() > self.refresh_drift
            ):
                self.refresh(method)
                self.refresh_count_drift += 1
            drift_now = training and self.drift_every and self.steps % self.drift_every == 0
            retrieved = None
            if self.candidate_scheme == "bucket_shared" and self._use_bucket_tiles(hidden):
                loss = self._bucket_tile_loss(hidden, target)
            else:
                if self.candidate_scheme == "bucket_shared":  # the whole union of its buckets
                    retrieved = self.index.search_union(hidden)
                else:
                    retrieved = self.index.search(hidden, self.num_candidates - 1)
                loss = self._estimator_loss(
                    hidden, target, retrieved, self.reduction, self._generator(hidden.device)
                )
            if drift_now:
                if retrieved is None:  # the tiles score the bucket union: check that set
                    retrieved = self.index.search_union(hidden)
                self._drift_check(hidden, target, retrieved)
        if training:
            self.steps += 1
        return loss

    def _check_weight_size(self) -> None:
        """weight.data (or bias.data) replaced by a tensor of another size leaves num_classes,
        dim and the index stale: say so instead of a silent wrong n or an IndexError."""
        shape = tuple(self.weight.shape)
        bias_ok = self.bias is None or tuple(self.bias.shape) == (shape[0],)
        if shape != (self.num_classes, self.dim) or not bias_ok:
            got = f"weight {shape}" + (
                f", bias {tuple(self.bias.shape)}" if self.bias is not None else ""
            )
            raise ValueError(
                f"this module was built for weight ({self.num_classes}, {self.dim}) but now "
                f"has {got}: weight.data was replaced by a tensor of another size; make a "
                "new SampledSoftmaxLoss for the new number of classes"
            )

    def _use_bucket_tiles(self, hidden: torch.Tensor) -> bool:
        if self.bucket_impl != "auto":
            return self.bucket_impl == "tiles"
        return not self.sparse_grad and _is_uniform(self.sampler)

    def _bucket_tile_loss(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """bucket_shared scored by dense bucket tiles (bucket_tiles.bucket_tile_loss)."""
        target = target.long()
        valid = target != self.ignore_index
        safe = torch.where(valid, target, torch.zeros_like(target))
        if self.num_uniform == 0:
            _warn_no_uniform(self.num_classes, self.num_classes - 1)
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
        if self.index.any_nonfinite is not None:  # a NaN/inf class at the build: every row
            c = self.index.first_nonfinite  # NaN, as the searches' (nonfinite.py)
            z_bad = hidden.to(loss.dtype) @ self.weight[c].to(loss.dtype)
            if self.bias is not None:
                z_bad = z_bad + self.bias[c].to(loss.dtype)
            loss = loss + torch.where(self.index.any_nonfinite, z_bad * 0.0, 0.0)
        return _reduce(loss, valid, self.reduction)  # zeroes the ignored rows

    def _estimator_loss(
        self, hidden, target, retrieved, reduction, generator, weight=None, bias=None
    ):
        return sampled_softmax_from_candidates(
            hidden,
            self.weight if weight is None else weight,
            target,
            retrieved,
            self.bias if weight is None else bias,
            num_uniform=self.num_uniform,
            reduction=reduction,
            ignore_index=self.ignore_index,
            sparse_grad=self.sparse_grad,
            deterministic=self.deterministic,
            generator=generator,
            # bucket_shared: S_i = the bucket union, scored with one shared T; the same
            # estimator as the tiles of bucket_tiles.bucket_tile_loss (tested equal)
            scheme="shared_samples"
            if self.candidate_scheme == "bucket_shared"
            else self.candidate_scheme,
            sampler=self.sampler,
            remove_accidental_hits=self.remove_accidental_hits,
            z_loss=self.z_loss if weight is None else 0.0,
            softcap=self.softcap,
        )

    def _drift_check(self, hidden, target, retrieved) -> dict:
        """Exact vs approximate loss, and the cosine of their gradients w.r.t. hidden, on the
        first drift_rows rows; appended to drift_log and passed to drift_hook. Costs one exact
        pass over the slice (and a host sync) every drift_every steps; nothing when off."""
        t0 = time.perf_counter()
        k = min(self.drift_rows, hidden.shape[0])
        h = hidden[:k].detach().requires_grad_(True)
        y = target[:k]
        W = self.weight.detach()
        b = self.bias.detach() if self.bias is not None else None
        with torch.enable_grad():
            approx = self._estimator_loss(
                h, y, retrieved[:k], "sum", self._generator(h.device), W, b
            )
            (g_approx,) = torch.autograd.grad(approx, h)
            approx = approx.detach()
            exact = _full_loss(h, W, b, y, "sum", self.ignore_index, 0.0, 0.0, self.softcap)
            (g_exact,) = torch.autograd.grad(exact, h)
            exact = exact.detach()
        rows = int((y != self.ignore_index).sum())
        cos = torch.nn.functional.cosine_similarity(
            g_approx.flatten().double(), g_exact.flatten().double(), dim=0
        )
        a, e = float(approx), float(exact)
        stats = dict(
            step=self.steps,
            rows=rows,
            approx_loss=a / max(rows, 1),
            exact_loss=e / max(rows, 1),
            rel_error=abs(a - e) / max(abs(e), 1e-12),
            grad_cosine=float(cos),
            seconds=time.perf_counter() - t0,
        )
        self.drift_log.append(stats)
        if self.drift_hook is not None:
            self.drift_hook(stats)
        return stats

    @torch.no_grad()
    def topk(
        self, hidden: torch.Tensor, k: int, exact: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k classes per row: (scores (N, k) float32, ids (N, k) int64).

        Approximate paths retrieve max(|S|, k) candidates from the index and rerank them by
        exact logits (ids -1 where fewer than k were found); exact=True or the full path
        scores every class (chunked).
        """
        self._check_weight_size()
        if hidden.dim() != 2 or hidden.shape[1] != self.dim:
            raise ValueError(f"hidden must be (N, {self.dim}), got {tuple(hidden.shape)}")
        checks.check_int_option("k", k, 1, self.num_classes)
        method = self.choice(hidden.shape[0], hidden.dtype, hidden.device, inference=True).method
        if exact or method == "full":
            return exact_topk(hidden, self.weight, k, self.bias)
        if self._index_missing(method):
            self.refresh(method)
        cand = self.index.search(hidden, max(self.num_candidates, k))
        return rerank_topk(hidden, self.weight, cand, k, self.bias)

    # ---- state ---------------------------------------------------------------------------
    def get_extra_state(self) -> dict:
        return dict(self._index_state(), lsh_bits=self.lsh_bits, lsh_tables=self.lsh_tables)

    def set_extra_state(self, state: dict) -> None:
        self._load_index_state(state)
        self.lsh_bits, self.lsh_tables = state["lsh_bits"], state["lsh_tables"]

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, method={self.method!r}, "
            f"num_candidates={self.num_candidates}, num_uniform={self.num_uniform}, "
            f"bias={self.bias is not None}, sparse_grad={self.sparse_grad}"
        )
