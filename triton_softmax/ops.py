"""One entry per kernel: the Triton launcher on CUDA (or when forced), its PyTorch twin elsewhere.

Choice per call, by the tensor's device and TRITON_SOFTMAX_IMPL:
  auto   (default) Triton on CUDA tensors when triton imports, the PyTorch twin otherwise
  torch  always the twin
  triton always Triton (on CPU this needs TRITON_INTERPRET=1: for tests, not for speed)
"""

from __future__ import annotations

import functools
import os

import torch

from . import candidates as _cand
from . import estimator as _est
from . import full as _full
from . import lsh as _lsh

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


def _route(name: str, ref, probe: torch.Tensor, *args, **kwargs):
    if use_triton(probe):
        fn = _kernel(name)
        if fn is not None:
            return fn(*args, **kwargs)
    return ref(*args, **kwargs)


def simhash_codes(x, hyperplanes, bias=None, max_norm=None):
    return _route("simhash_codes", _lsh.simhash_codes_ref, x, x, hyperplanes, bias, max_norm)


def bucket_table(codes, num_bits, order_seed=0):
    return _route("bucket_table", _lsh.bucket_table_ref, codes, codes, num_bits, order_seed)


def lsh_candidates(query_codes, sorted_ids, offsets, num_candidates, max_per_bucket):
    return _route(
        "lsh_candidates",
        _lsh.lsh_candidates_ref,
        query_codes,
        query_codes,
        sorted_ids,
        offsets,
        num_candidates,
        max_per_bucket,
    )


def _lsh_query_ref(hidden, hyperplanes, bias, sorted_ids, offsets, num_candidates, max_per_bucket):
    codes = _lsh.simhash_codes_ref(hidden, hyperplanes, bias, None)
    return _lsh.lsh_candidates_ref(codes, sorted_ids, offsets, num_candidates, max_per_bucket)


def lsh_query(hidden, hyperplanes, bias, sorted_ids, offsets, num_candidates, max_per_bucket):
    """Hash the queries and look them up (one fused launch on the Triton path):
    simhash_codes(hidden, hyperplanes, bias, None) then lsh_candidates(...)."""
    return _route(
        "lsh_query",
        _lsh_query_ref,
        hidden,
        hidden,
        hyperplanes,
        bias,
        sorted_ids,
        offsets,
        num_candidates,
        max_per_bucket,
    )


def build_candidates(retrieved, target, n, num_uniform, generator=None):
    return _cand.build_candidates(retrieved, target, n, num_uniform, generator)


def sampled_logits_fwd(hidden, weight, bias, cand_ids, cand_logw, target):
    return _route(
        "sampled_logits_fwd",
        _est.sampled_logits_fwd_ref,
        hidden,
        hidden,
        weight,
        bias,
        cand_ids,
        cand_logw,
        target,
    )


def sampled_logits_coef(grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse):
    return _route(
        "sampled_logits_coef",
        _est.sampled_logits_coef_ref,
        hidden,
        grad_loss,
        hidden,
        weight,
        bias,
        cand_ids,
        cand_logw,
        target,
        lse,
    )


def sampled_logits_bwd(grad_loss, hidden, weight, bias, cand_ids, cand_logw, target, lse):
    """(coef, ids, dh): sampled_logits_coef and grad_hidden in one pass on the Triton path."""
    return _route(
        "sampled_logits_bwd",
        _est.sampled_logits_bwd_ref,
        hidden,
        grad_loss,
        hidden,
        weight,
        bias,
        cand_ids,
        cand_logw,
        target,
        lse,
    )


def grad_hidden(coef, ids, weight):
    return _route("grad_hidden", _est.grad_hidden_ref, weight, coef, ids, weight)


def scatter_grad_weight(coef, ids, hidden, n, deterministic=False):
    if use_triton(hidden):
        fn = _kernel("scatter_grad_weight")
        if fn is not None:
            return fn(coef, ids, hidden, n, deterministic=deterministic)
    return _est.scatter_grad_weight_ref(coef, ids, hidden, n)


def chunked_ce_fwd(hidden, weight, bias, target, label_smoothing=0.0):
    return _route(
        "linear_ce_fwd",
        _full.chunked_ce_fwd_ref,
        hidden,
        hidden,
        weight,
        bias,
        target,
        label_smoothing,
    )


def chunked_ce_bwd(grad_loss, hidden, weight, bias, target, lse, label_smoothing=0.0):
    return _route(
        "linear_ce_bwd",
        _full.chunked_ce_bwd_ref,
        hidden,
        grad_loss,
        hidden,
        weight,
        bias,
        target,
        lse,
        label_smoothing,
    )


def bucket_tile_lse(hidden, weight, bias, target, query_codes, key_codes, sorted_ids, offsets):
    from . import bucket_tiles as _bt

    return _route(
        "bucket_tile_lse",
        _bt.bucket_tile_lse_ref,
        hidden,
        hidden,
        weight,
        bias,
        target,
        query_codes,
        key_codes,
        sorted_ids,
        offsets,
    )


def bucket_tile_lse_bwd(
    grad_lse, lse, hidden, weight, bias, target, query_codes, key_codes, sorted_ids, offsets
):
    from . import bucket_tiles as _bt

    return _route(
        "bucket_tile_lse_bwd",
        _bt.bucket_tile_lse_bwd_ref,
        hidden,
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


def sparse_adam_update(param, exp_avg, exp_avg_sq, rows, values, step_size, beta1, beta2, eps):
    """In-place sparse Adam row update (optim.FusedSparseAdam); the twin lives in optim.py."""
    from .optim import sparse_adam_update_ref

    return _route(
        "sparse_adam_update",
        sparse_adam_update_ref,
        param,
        param,
        exp_avg,
        exp_avg_sq,
        rows,
        values,
        step_size,
        beta1,
        beta2,
        eps,
    )
