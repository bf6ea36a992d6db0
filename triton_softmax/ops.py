"""The one place that picks kernel or twin: a routing table, op -> (launcher, twin, fallback).

Choice per call, by the probe tensor's device and TRITON_SOFTMAX_IMPL:
  auto   (default) Triton on CUDA tensors when triton imports, the PyTorch twin otherwise
  torch  always the twin
  triton always Triton (on CPU this needs TRITON_INTERPRET=1: for tests, not for speed)
and, whatever the setting, the twin where the route says the kernel does not apply: its
fallback rule (float64 operands: the kernels compute in fp32; soft-capped logits: no kernel
implements softcap) or the launcher's own capacity check (`fits`: an LSH table too large for
registers). The launchers live in triton_softmax.kernels (imported lazily: no triton, no
kernels) and reject what they do not compute; they never call a twin. The twins live in
triton_softmax.reference. Neither imports this module.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .reference.bucket_tiles import bucket_tile_lse_bwd_ref, bucket_tile_lse_ref
from .reference.linear_ce import chunked_ce_bwd_ref, chunked_ce_fwd_ref
from .reference.list_scores import list_topk_ref
from .reference.list_tiles import list_tile_topk_ref
from .reference.sampled_logits import (
    grad_hidden_ref,
    sampled_logits_bwd_ref,
    sampled_logits_coef_ref,
    sampled_logits_fwd_ref,
    scatter_grad_weight_ref,
)
from .reference.simhash import (
    bucket_table_ref,
    lsh_candidates_ref,
    lsh_query_ref,
    simhash_codes_ref,
)
from .reference.sparse_adam import sparse_adam_update_ref

IMPLS = ("auto", "torch", "triton")


@functools.lru_cache(maxsize=1)
def triton_importable() -> bool:
    try:
        import triton  # noqa: F401

        return True
    except Exception:
        return False


def impl_setting() -> str:
    impl = os.environ.get("TRITON_SOFTMAX_IMPL", "auto").lower()
    if impl not in IMPLS:
        raise ValueError(f"TRITON_SOFTMAX_IMPL must be one of {IMPLS}, got {impl!r}")
    return impl


def use_triton(t: torch.Tensor) -> bool:
    impl = impl_setting()
    if impl == "torch":
        return False
    if impl == "triton":
        if not triton_importable():
            raise RuntimeError("TRITON_SOFTMAX_IMPL=triton but triton does not import")
        if not t.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("TRITON_SOFTMAX_IMPL=triton on CPU tensors needs TRITON_INTERPRET=1")
        return True
    return t.is_cuda and triton_importable()


def _kernel(name: str):
    """The Triton launcher `name` from triton_softmax.kernels, or None if not implemented."""
    try:
        from . import kernels
    except Exception:  # pragma: no cover - triton missing
        return None
    return getattr(kernels, name, None)


def _any_fp64(*args, **kwargs) -> bool:
    """Fallback rule: a float64 tensor among the operands (the kernels accumulate in fp32)."""
    return any(
        isinstance(a, torch.Tensor) and a.dtype == torch.float64 for a in (*args, *kwargs.values())
    )


def _fp64_or_softcap(*args, softcap: float = 0.0, **kwargs) -> bool:
    """Fallback rule of the logits ops: _any_fp64, or soft-capped logits (softcap > 0: no
    kernel implements the cap)."""
    return bool(softcap) or _any_fp64(*args, **kwargs)


def _fp64_or_cuda(*args, **kwargs) -> bool:
    """Fallback rule of list_topk: _any_fp64, or CUDA tensors. On an H200 with triton 3.6
    the kernel's sort of packed (score, id) int64 keys returned one id of 40 from another
    key (score right, id a class already listed; bench/results/gpu-h200-20261130-full/), which
    the interpreter never shows. Until a GPU run passes
    tests/test_cuda_kernels.py::test_list_topk_matches_twin, CUDA runs the twin (exact,
    sync-free, a padded gather and one batched product per chunk of queries). The clusters
    search itself no longer calls list_topk on CUDA (ops.list_tile_topk)."""
    return _any_fp64(*args, **kwargs) or (isinstance(args[0], torch.Tensor) and args[0].is_cuda)


@dataclass(frozen=True)
class Route:
    """kernel: launcher name in triton_softmax.kernels; twin: the PyTorch function with the
    same contract; probe: index of the argument whose device decides; fallback(*args,
    **kwargs) -> True: run the twin even where Triton would run; fits: name of the launcher's
    capacity check in triton_softmax.kernels (same arguments; False: run the twin)."""

    kernel: str
    twin: Callable
    probe: int = 0
    fallback: Callable[..., bool] | None = _any_fp64
    fits: str | None = None


ROUTES: dict[str, Route] = {
    "simhash_codes": Route("simhash_codes", simhash_codes_ref, fallback=None),
    # no bucket_table launcher: the refresh-time table build stays in torch (bucket_lookup.py)
    "bucket_table": Route("bucket_table", bucket_table_ref, fallback=None),
    "lsh_candidates": Route(
        "lsh_candidates", lsh_candidates_ref, fallback=None, fits="lsh_candidates_fits"
    ),
    "lsh_query": Route("lsh_query", lsh_query_ref, fallback=None, fits="lsh_query_fits"),
    "sampled_logits_fwd": Route(
        "sampled_logits_fwd", sampled_logits_fwd_ref, fallback=_fp64_or_softcap
    ),
    "sampled_logits_coef": Route("sampled_logits_coef", sampled_logits_coef_ref, probe=1),
    "sampled_logits_bwd": Route(
        "sampled_logits_bwd", sampled_logits_bwd_ref, probe=1, fallback=_fp64_or_softcap
    ),
    "grad_hidden": Route("grad_hidden", grad_hidden_ref, probe=2),
    "scatter_grad_weight": Route("scatter_grad_weight", scatter_grad_weight_ref, probe=2),
    # the exact path: chunked GEMMs (kernels/linear_ce_chunked.py) by default, the fused
    # one-pass kernels (kernels/linear_ce.py) under TRITON_SOFTMAX_EXACT_KERNEL=fused
    "linear_ce_fwd": Route("linear_ce_chunked_fwd", chunked_ce_fwd_ref, fallback=_fp64_or_softcap),
    "linear_ce_bwd": Route(
        "linear_ce_chunked_bwd", chunked_ce_bwd_ref, probe=1, fallback=_fp64_or_softcap
    ),
    "linear_ce_fused_fwd": Route("linear_ce_fwd", chunked_ce_fwd_ref, fallback=_fp64_or_softcap),
    "linear_ce_fused_bwd": Route(
        "linear_ce_bwd", chunked_ce_bwd_ref, probe=1, fallback=_fp64_or_softcap
    ),
    "bucket_tile_lse": Route("bucket_tile_lse", bucket_tile_lse_ref),
    "bucket_tile_lse_bwd": Route("bucket_tile_lse_bwd", bucket_tile_lse_bwd_ref, probe=2),
    "sparse_adam_update": Route("sparse_adam_update", sparse_adam_update_ref),
    "list_topk": Route("list_topk", list_topk_ref, fallback=_fp64_or_cuda, fits="list_topk_fits"),
    "list_tile_topk": Route("list_tile_topk", list_tile_topk_ref, fits="list_tile_topk_fits"),
}


def route(op: str, *args, kernel_kwargs: dict | None = None, twin_kwargs: dict | None = None):
    """Run `op` on the launcher or the twin (see the module docstring). kernel_kwargs: extra
    keyword arguments only the launcher takes; twin_kwargs: only the twin takes (the fallback
    rule sees them: a softcap there sends the call to the twin)."""
    r = ROUTES[op]
    twin_kwargs = twin_kwargs or {}
    if use_triton(args[r.probe]) and not (r.fallback and r.fallback(*args, **twin_kwargs)):
        fn = _kernel(r.kernel)
        fits = _kernel(r.fits) if r.fits else None
        if fn is not None and (fits is None or fits(*args)):
            return fn(*args, **(kernel_kwargs or {}))
    return r.twin(*args, **twin_kwargs)


def _capped(softcap: float, **twin_only) -> dict:
    """twin_kwargs of a logits op: the cap and what only the capped twin takes, or none."""
    return {"softcap": softcap, **twin_only} if softcap else {}


def simhash_codes(x, hyperplanes, bias=None, max_norm=None):
    return route("simhash_codes", x, hyperplanes, bias, max_norm)


def bucket_table(codes, num_bits, order_seed=0):
    return route("bucket_table", codes, num_bits, order_seed)


def lsh_candidates(query_codes, sorted_ids, offsets, num_candidates, max_per_bucket):
    return route("lsh_candidates", query_codes, sorted_ids, offsets, num_candidates, max_per_bucket)


def lsh_query(hidden, hyperplanes, bias, sorted_ids, offsets, num_candidates, max_per_bucket):
    """Hash the queries and look them up (one fused launch on the Triton path):
    simhash_codes(hidden, hyperplanes, bias, None) then lsh_candidates(...)."""
    return route(
        "lsh_query", hidden, hyperplanes, bias, sorted_ids, offsets, num_candidates, max_per_bucket
    )


def sampled_logits_fwd(hidden, weight, bias, cand_ids, cand_logw, target, softcap=0.0):
    """(loss (N,), lse (N,)); softcap > 0 runs the twin (no kernel implements it)."""
    args = (hidden, weight, bias, cand_ids, cand_logw, target)
    return route("sampled_logits_fwd", *args, twin_kwargs=_capped(softcap))


def sampled_logits_coef(grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse):
    return route(
        "sampled_logits_coef", grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse
    )


def sampled_logits_bwd(
    grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse, softcap=0.0, target_grad=None
):
    """(coef, ids, dh): sampled_logits_coef and grad_hidden in one pass on the Triton path;
    softcap > 0 runs the twin (target_grad: the target term's own gradient, see the twin)."""
    args = (grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse)
    return route("sampled_logits_bwd", *args, twin_kwargs=_capped(softcap, target_grad=target_grad))


# a CPU forward keeps the gathered rows for its backward while they take at most this much
KEEP_ROWS_BYTES = 1 << 28


def keeps_rows(hidden: torch.Tensor, weight: torch.Tensor, cand_ids: torch.Tensor) -> bool:
    """Whether a loss Function's forward keeps the candidate rows (N, M+1, d) it gathered
    (sampled_logits_fwd_rows_ref) for its backward: on the twin path, under KEEP_ROWS_BYTES.
    There the backward's second gather of the rows and second product cost about as much as
    the forward; the kernels gather rows in their loads and keep nothing."""
    if use_triton(hidden):
        return False
    N, M = cand_ids.shape
    return N * (M + 1) * weight.shape[1] * weight.element_size() <= KEEP_ROWS_BYTES


def grad_hidden(coef, ids, weight):
    return route("grad_hidden", coef, ids, weight)


def scatter_grad_weight(coef, ids, hidden, n, deterministic=False):
    # deterministic only selects between two kernels: the twin (index_add) takes no such flag
    return route(
        "scatter_grad_weight", coef, ids, hidden, n, kernel_kwargs={"deterministic": deterministic}
    )


EXACT_KERNELS = ("chunked", "fused")
EXACT_KERNEL_ENV = "TRITON_SOFTMAX_EXACT_KERNEL"


def exact_kernel() -> str:
    """Which Triton kernels the exact path runs where Triton runs: "chunked" (default: an LSE
    pass, then per class chunk a GEMM with a dz epilogue and two cuBLAS products, no atomics)
    or "fused" (the one-pass kernels with atomic dW/dh partials, kept until a GPU run shows
    where they are faster), from TRITON_SOFTMAX_EXACT_KERNEL."""
    kind = os.environ.get(EXACT_KERNEL_ENV, "chunked").lower()
    if kind not in EXACT_KERNELS:
        raise ValueError(f"{EXACT_KERNEL_ENV} must be one of {EXACT_KERNELS}, got {kind!r}")
    return kind


def linear_ce_fwd(hidden, weight, bias, target, label_smoothing=0.0, softcap=0.0):
    """(loss (N,), lse (N,)) of the exact cross-entropy, chunked; softcap > 0 runs the twin."""
    args = (hidden, weight, bias, target, label_smoothing)
    op = "linear_ce_fwd" if exact_kernel() == "chunked" else "linear_ce_fused_fwd"
    return route(op, *args, twin_kwargs=_capped(softcap))


def linear_ce_bwd(
    grad_loss, hidden, weight, bias, target, lse, label_smoothing=0.0, softcap=0.0, target_grad=None
):
    """(dh, dW, db) of sum grad_loss * loss; softcap > 0 runs the twin.

    target_grad: the one-hot and smoothing terms' own gradient (z-loss scales only the
    softmax part by grad_loss); the twin and the chunked kernel take it, the fused kernel's
    result gets the difference added afterwards. dh is float32 (float64 for float64); dW and
    db are float32 from the twin and the fused kernel, the weight's and bias's dtypes from
    the chunked kernel (written once there): callers cast to the parameter dtype.
    """
    args = (grad_loss, hidden, weight, bias, target, lse, label_smoothing)
    tg = {} if target_grad is None else {"target_grad": target_grad}
    if exact_kernel() == "chunked" or softcap:
        twin_kw = {**_capped(softcap), **tg}
        return route("linear_ce_bwd", *args, kernel_kwargs=tg, twin_kwargs=twin_kw)
    dh, dW, db = route("linear_ce_fused_bwd", *args)
    if target_grad is None:
        return dh, dW, db
    delta = grad_loss.to(dh.dtype) - target_grad.to(dh.dtype)
    return _add_target_terms(dh, dW, db, delta, hidden, weight, target, label_smoothing)


def _add_target_terms(dh, dW, db, delta, hidden, weight, target, eps):
    """Gradients computed with grad_loss g_p on the one-hot and smoothing terms, put right for
    their own gradient g = g_p - delta: add delta ((1 - eps) 1[j = y] + eps / n) back to dz."""
    n = weight.shape[0]
    acc = dh.dtype
    h = hidden.to(acc)
    dh = dh + (1.0 - eps) * delta.unsqueeze(1) * weight[target].to(acc)
    dW = dW.index_add(0, target, (1.0 - eps) * delta.unsqueeze(1) * h)
    if db is not None:
        db = db.index_add(0, target, (1.0 - eps) * delta)
    if eps:
        dh = dh + (eps / n) * delta.unsqueeze(1) * weight.to(acc).sum(0)
        dW = dW + (eps / n) * (delta.unsqueeze(1) * h).sum(0)
        if db is not None:
            db = db + (eps / n) * delta.sum()
    return dh, dW, db


# the old names of the full-path ops (the kernel file is linear_ce.py)
chunked_ce_fwd = linear_ce_fwd
chunked_ce_bwd = linear_ce_bwd


def bucket_tile_lse(hidden, weight, bias, target, query_codes, key_codes, sorted_ids, offsets):
    return route(
        "bucket_tile_lse", hidden, weight, bias, target, query_codes, key_codes, sorted_ids, offsets
    )


def bucket_tile_lse_bwd(
    grad_lse, lse, hidden, weight, bias, target, query_codes, key_codes, sorted_ids, offsets
):
    return route(
        "bucket_tile_lse_bwd",
        grad_lse,
        lse,
        hidden,
        weight,
        bias,
        target,
        query_codes,
        key_codes,
        sorted_ids,
        offsets,
    )


def list_topk(hidden, weight, bias, order, offsets, lists, k, max_list):
    """(scores (N, p, k') float32, ids (N, p, k') int64): the best k' = min(k, max_list)
    members of every probed list of a CSR list index (index/clusters.py), best first."""
    return route("list_topk", hidden, weight, bias, order, offsets, lists, k, max_list)


def list_tile_topk(hidden, rows, bias, members, offsets, lists, k, max_list, tie_by_row=False):
    """(scores (N, p, k') float32, pos (N, p, k') int64): the best k' = min(k, max_list)
    members of every probed list as positions in the list, best first (ties: the smaller
    position; tie_by_row: the member's row instead of its position, ties by smaller row; a
    list read up to its first max_list members); list tiles scored on tensor cores
    (kernels/list_tiles.py)."""
    return route(
        "list_tile_topk", hidden, rows, bias, members, offsets, lists, k, max_list, tie_by_row
    )


def sparse_adam_update(param, exp_avg, exp_avg_sq, rows, values, step_size, beta1, beta2, eps):
    """In place: SparseAdam's update of the touched rows (optim.FusedSparseAdam)."""
    args = (param, exp_avg, exp_avg_sq, rows, values, step_size, beta1, beta2, eps)
    return route("sparse_adam_update", *args)
