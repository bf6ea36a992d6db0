"""The functional API: the loss for given weights (you keep weight and index).

Validates inputs in Python (shapes, dtypes, devices, options, label range) before any kernel
runs, then runs one of three paths on one estimator:

  full   exact cross-entropy over all n classes, in chunks (no (N, n) logits tensor)
  faiss  S = top-|S| classes by inner product from a FAISS index, + |T| uniform samples
  lsh    S = union of the query's SimHash buckets over L tables, ranked and capped, + T

Semantics follow torch.nn.functional.cross_entropy: reduction none/mean/sum; rows whose target
equals ignore_index get zero loss and zero gradient; "mean" divides by the number of
non-ignored rows, so a batch with every row ignored gives NaN for "mean" (as torch does) and 0
for "sum". Non-finite inputs propagate as in torch unless validate=True, which raises instead.

The public functions take flat keyword arguments (mapped onto options.py objects); the
module (loss.py) calls the option-object forms (full_loss, estimator_loss, cached_choice).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch

from . import candidates, checks, custom_ops
from .autograd import (
    ChunkedCrossEntropyFunction,
    LossParams,
    SampledSoftmaxFunction,
    SharedCandidatesFunction,
)
from .dispatch import Choice, choose_method
from .index.factory import Index, make_index
from .nonfinite import add_nonfinite_class, nonfinite_class
from .options import (
    BUCKET_IMPLS,  # noqa: F401  (re-exported: the old loss.py names)
    SCHEMES,
    GradOptions,
    LossOptions,
    SamplingOptions,
    check_nonneg_float,
)
from .samplers import Sampler, make_sampler


def valid_rows(target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row_valid (N,) bool, safe_target (N,) int64: ignored rows point at class 0)."""
    target = target.long()  # uint8/int16: ignore_index would wrap in the comparison
    row_valid = target != ignore_index
    return row_valid, torch.where(row_valid, target, torch.zeros_like(target))


def _reduce(loss_rows: torch.Tensor, row_valid: torch.Tensor, reduction: str) -> torch.Tensor:
    loss_rows = torch.where(row_valid, loss_rows, torch.zeros_like(loss_rows))
    if reduction == "none":
        return loss_rows
    total = loss_rows.sum()
    if reduction == "sum":
        return total
    return total / row_valid.sum()


def check_inputs(hidden, weight, target, bias, loss: LossOptions) -> tuple[int, int, int]:
    """Shapes, dtypes, devices and the label range; finiteness with loss.validate. (N, n, d)."""
    N, n, d = checks.check_loss_inputs(hidden, weight, target, bias)
    checks.check_target_values(target, n, loss.ignore_index)
    if loss.validate:
        checks.check_finite("hidden", hidden)
        checks.check_finite("weight", weight)
        if bias is not None:
            checks.check_finite("bias", bias)
    return N, n, d


def _check_softcap(softcap: float) -> float:
    return check_nonneg_float("softcap", softcap)


def _check_z_loss(z_loss: float) -> float:
    return check_nonneg_float("z_loss", z_loss)


def _is_uniform(sampler) -> bool:
    return isinstance(sampler, str) and sampler in ("uniform", "auto")


def _head_split(sampler, num_head: int, n: int, device) -> tuple[torch.Tensor | None, Sampler]:
    """(head ids on `device` or None, the proposal T is drawn from): samplers.split_head."""
    q = make_sampler(sampler, n)
    if not num_head:
        return None, q
    if not hasattr(q, "split_head"):
        raise ValueError(f"num_head needs class weights (a CategoricalSampler), got {q!r}")
    head, tail = q.split_head(num_head)
    return head.to(device), tail


def _check_explicit(hidden, weight, target, retrieved, bias, loss: LossOptions):
    """The explicit-candidate entry point's own checks (it is public: bias length, label
    range and the retrieved ids' shape get a ValueError naming the argument, not an
    IndexError from a gather)."""
    N, _, _ = check_inputs(hidden, weight, target, bias, loss)
    checks.check_tensor("retrieved", retrieved)
    if retrieved.dim() != 2 or retrieved.shape[0] != N or retrieved.dtype.is_floating_point:
        raise ValueError(
            f"retrieved must be (N={N}, R) integer class ids, got shape "
            f"{tuple(retrieved.shape)}, dtype {retrieved.dtype}"
        )


_WARNED_NO_UNIFORM = False


def warn_no_uniform(n: int, width: int) -> None:
    """num_uniform=0 with |S| < n: a softmax over S only, no longer an estimate of the full
    loss. Allowed (e.g. for a fixed candidate list), said once per process."""
    global _WARNED_NO_UNIFORM
    if width < n and not _WARNED_NO_UNIFORM and not torch.compiler.is_compiling():
        _WARNED_NO_UNIFORM = True
        warnings.warn(
            f"num_uniform=0 with |S| <= {width} of n={n} classes: the loss is a softmax over "
            "the retrieved candidates only, not an estimate of the full softmax loss (it is "
            "biased low); set num_uniform > 0 for the estimator",
            stacklevel=4,
        )


_CHOICES: dict[tuple, Choice] = {}
MAX_CACHED_CHOICES = 4096  # bounded: cleared when full (a plain dict, which Dynamo traces)


def cached_choice(
    method: str,
    num_candidates: int,
    num_uniform: int,
    label_smoothing: float,
    n: int,
    d: int,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    inference: bool = False,
) -> Choice:
    """choose_method once per (method, sizes, device): the option fields the dispatcher reads
    are the key (plain values: no sampler tensor, and traceable by torch.compile)."""
    key = (method, num_candidates, num_uniform, label_smoothing, n, d, batch, dtype, device)
    key = (*key, inference)
    choice = _CHOICES.get(key)
    if choice is None:
        if len(_CHOICES) >= MAX_CACHED_CHOICES:
            _CHOICES.clear()
        choice = _CHOICES[key] = choose_method(
            method,
            n,
            d,
            batch,
            dtype,
            device,
            num_candidates,
            num_uniform,
            float(label_smoothing),
            inference=inference,
        )
    return choice


def full_loss(hidden, weight, bias, target, loss: LossOptions, grad: GradOptions):
    """The exact path (chunked cross-entropy), reduced as `loss` says."""
    row_valid, safe_target = valid_rows(target, loss.ignore_index)
    if torch.compiler.is_compiling():  # opaque custom op: no graph break
        if loss.z_loss or loss.softcap:
            raise ValueError("z_loss and softcap are not supported inside torch.compile")
        loss_rows = custom_ops.linear_ce_fwd(
            hidden, weight, bias, safe_target, float(loss.label_smoothing)
        )[0]
    else:
        params = LossParams(
            float(loss.label_smoothing), loss.z_loss, loss.softcap, sparse_grad=bool(grad.sparse)
        )
        loss_rows = ChunkedCrossEntropyFunction.apply(hidden, weight, bias, safe_target, params)
    return _reduce(loss_rows, row_valid, loss.reduction)


def estimator_loss(
    hidden,
    weight,
    target,
    retrieved,
    bias,
    loss: LossOptions,
    sampling: SamplingOptions,
    grad: GradOptions,
    generator: torch.Generator | None = None,
    scheme: str | None = None,
) -> torch.Tensor:
    """sampled_softmax_from_candidates with option objects; scheme overrides sampling.scheme
    (the module scores bucket_shared's union as "shared_samples")."""
    scheme = sampling.scheme if scheme is None else scheme
    if loss.softcap and scheme != "per_example":
        raise ValueError(f"softcap is supported with scheme='per_example' only, got {scheme!r}")
    if scheme not in SCHEMES[:4]:
        raise ValueError(
            f"scheme must be one of {SCHEMES[:4]} here ('bucket_shared' needs the LSH index: "
            f"SampledSoftmaxLoss(method='lsh', candidate_scheme='bucket_shared')), got {scheme!r}"
        )
    n = weight.shape[0]
    row_valid, safe_target = valid_rows(target, loss.ignore_index)
    num_uniform, sampler = sampling.num_uniform, sampling.sampler
    if num_uniform == 0:
        warn_no_uniform(n, retrieved.shape[1] + 1)
    # log-weights in the accumulation dtype: float64 inputs stay float64 end to end
    logw_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    if scheme == "per_example":
        if _is_uniform(sampler):
            cand_ids, cand_logw = candidates.build_candidates(
                retrieved, safe_target, n, num_uniform, generator, logw_dtype=logw_dtype
            )
        else:
            cand_ids, cand_logw = candidates.build_candidates_q(
                retrieved,
                safe_target,
                n,
                num_uniform,
                make_sampler(sampler, n),
                generator,
                sampling.remove_accidental_hits,
                logw_dtype=logw_dtype,
            )
        if torch.compiler.is_compiling():  # opaque custom op: no graph break (dense grads)
            if grad.sparse or loss.z_loss or loss.softcap:
                raise ValueError(
                    "sparse_grad, z_loss and softcap are not supported inside torch.compile"
                )
            loss_rows = custom_ops.sampled_softmax_fwd(
                hidden, weight, bias, cand_ids, cand_logw, safe_target
            )[0]
        else:
            params = LossParams(0.0, loss.z_loss, loss.softcap, grad.sparse, grad.deterministic)
            loss_rows = SampledSoftmaxFunction.apply(
                hidden, weight, bias, cand_ids, cand_logw, safe_target, params
            )
    else:
        hybrid = scheme == "hybrid"
        if hybrid and not _is_uniform(sampler):
            raise ValueError("scheme='hybrid' draws its per-row T uniformly: sampler='uniform'")
        if sampling.num_head and scheme != "shared_samples":
            raise ValueError(f"num_head needs scheme='shared_samples', got {scheme!r}")
        head, q = _head_split(sampler, sampling.num_head, n, hidden.device)
        s_ids, s_logw, sh_ids, sh_logw = candidates.build_shared_candidates(
            retrieved,
            safe_target,
            n,
            sampling.num_shared if hybrid else num_uniform,
            q,
            generator,
            union=scheme == "batch_union",
            remove_accidental_hits=sampling.remove_accidental_hits,
            logw_dtype=logw_dtype,
            num_own=num_uniform if hybrid else 0,
            head=head,
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
            LossParams(z_loss=loss.z_loss, sparse_grad=grad.sparse),
        )
    return _reduce(loss_rows, row_valid, loss.reduction)


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
    num_shared: int = 1024,
    num_head: int = 0,
) -> torch.Tensor:
    """The estimator loss for given retrieved classes S (the target is added, T is drawn).

    hidden: (N, d) float; weight: (n, d); target: (N,) int; retrieved: (N, R) int64 class ids,
    -1 for empty slots (duplicates and the target are dropped). Shapes, bias length and the
    label range are checked (ValueError naming the argument).

    scheme: "per_example" (each row its own S and T, gathered: the seeds' method),
    "shared_samples" (own S, one T shared by the batch, scored as a dense product),
    "batch_union" (S = union of all rows' S and targets, + shared T, all dense),
    "hybrid" (own S and own |T| uniform draws, gathered, plus one T of num_shared uniform
    draws shared by the batch, dense; every draw weighted n / (num_shared + |T|)).
    sampler: proposal of T: "uniform" (per-example scheme: uniform over the complement of S,
    exact weights), "log_uniform", or class weights (n,); non-uniform proposals get the log-Q
    correction, and draws that hit S get weight 0 unless remove_accidental_hits=False.
    num_head ("shared_samples" with class weights): the num_head classes of largest weight
    are scored exactly for every row (weight 1, 0 where in S) and T is drawn from the
    weights over the other classes (samplers.py: a head split), so the dense product has
    num_head + num_uniform columns. num_uniform is |T| whatever the proposal; num_uniform=0
    makes the loss a softmax over S only, no longer an estimate of the full loss (biased
    low unless S covers every class): allowed, with a warning once. z_loss: adds
    z_loss * lse^2 per row, lse the (estimated) log partition function (PaLM's z-loss).
    softcap c > 0: logits c tanh(z / c) (per-example scheme; runs the PyTorch twin, also on
    CUDA: no kernel implements it yet).
    """
    loss = LossOptions(reduction, ignore_index, z_loss=z_loss, softcap=softcap)
    _check_explicit(hidden, weight, target, retrieved, bias, loss)
    if isinstance(sampler, torch.Tensor):
        sampler = make_sampler(sampler, weight.shape[0])
    sampling = SamplingOptions(
        num_uniform=num_uniform,
        scheme=scheme if scheme in SCHEMES else "per_example",  # estimator_loss names it
        sampler=sampler,
        remove_accidental_hits=remove_accidental_hits,
        num_shared=num_shared,
        num_head=num_head,
    )
    grad = GradOptions(sparse_grad, deterministic)
    return estimator_loss(
        hidden, weight, target, retrieved, bias, loss, sampling, grad, generator, scheme
    )


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
    num_shared: int = 1024,
    num_head: int = 0,
) -> torch.Tensor:
    """Softmax cross-entropy of logits hidden @ weight.T (+ bias), exact or sampled.

    hidden: (N, d) float32/float16/bfloat16; weight: (n, d); target: (N,) int64;
    bias: (n,) or None. method: "auto" | "full" | "faiss" | "lsh" | "uniform" (no index:
    S = {target}, T uniform). For the lsh / faiss paths pass the `index` you keep
    (LSHIndex / FaissIndex, built on `weight`); without one an index is built for this call
    alone, which costs a full hashing pass or index build. The index must be built over
    this weight's n classes and d (ValueError otherwise). method="uniform" reads W once per
    call (a row sum) for a non-finite class row, which then joins every row's S
    (nonfinite.py: the module does it once per refresh_every steps).
    num_candidates: |S| including the target; num_uniform: |T|. z_loss adds z_loss * lse^2
    per row (lse: the exact or estimated log partition function). scheme, sampler,
    remove_accidental_hits, num_shared and num_head: see sampled_softmax_from_candidates. Returns a
    0-d float32 tensor (or (N,) for reduction="none").
    """
    loss = LossOptions(reduction, ignore_index, label_smoothing, z_loss, softcap, validate)
    checks.check_int_option("num_candidates (|S|)", num_candidates, 1)
    checks.check_int_option("num_uniform (|T|)", num_uniform, 0)
    N, n, d = check_inputs(hidden, weight, target, bias, loss)
    if isinstance(sampler, torch.Tensor):
        sampler = make_sampler(sampler, n)
    sampling = SamplingOptions(
        num_candidates,
        num_uniform,
        scheme if scheme in SCHEMES else "per_example",
        sampler=sampler,
        remove_accidental_hits=remove_accidental_hits,
        num_shared=num_shared,
        num_head=num_head,
    )
    grad = GradOptions(sparse_grad, deterministic)
    choice = cached_choice(
        method,
        num_candidates,
        num_uniform + num_head,  # the columns a step scores
        float(label_smoothing),
        n,
        d,
        N,
        hidden.dtype,
        hidden.device,
    )
    if choice.method == "full":
        return full_loss(hidden, weight, bias, target, loss, grad)
    if choice.method == "uniform":  # S = {target}: nothing to retrieve, no index
        retrieved = torch.empty((N, 0), dtype=torch.int64, device=hidden.device)
        # but a non-finite class row in every row's S, as an index adds it (nonfinite.py)
        bad = nonfinite_class(weight.detach(), bias.detach() if bias is not None else None)
        retrieved = add_nonfinite_class(retrieved, *bad)
    else:
        if index is None:
            index = make_index(choice.method, n, d, num_candidates, device=weight.device)
        if not index.built:
            index.build(weight, bias)
        if index.n != n:
            raise ValueError(f"index was built over {index.n} classes but weight has n={n}")
        index_d = getattr(index, "dim", None)
        if index_d is not None and index_d != d:  # before any search asserts deep inside
            raise ValueError(f"index was built for d={index_d} but hidden and weight have d={d}")
        retrieved = index.search(hidden, num_candidates - 1)
    return estimator_loss(
        hidden, weight, target, retrieved, bias, loss, sampling, grad, generator, scheme
    )


def with_loss(loss: LossOptions, **changes) -> LossOptions:
    """A copy of `loss` with some fields changed (the drift check's exact "sum" pass)."""
    return dataclasses.replace(loss, **changes)
