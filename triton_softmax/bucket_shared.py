"""The bucket-shared scheme's loss over dense bucket tiles (the estimator is derived in
reference/bucket_tiles.py; the tiles run in kernels/bucket_tiles.py or its twin, via ops.py).
"""

from __future__ import annotations

import math

import torch

from .autograd import BucketTileFunction
from .functional import warn_no_uniform
from .index.simhash import LSHIndex
from .reference.bucket_tiles import bucket_tile_lse_bwd_ref, bucket_tile_lse_ref  # noqa: F401
from .reference.sampled_logits import acc_dtype, nan_at_inf_lse


def bucket_tile_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    index: LSHIndex,
    num_uniform: int,
    generator: torch.Generator | None = None,
    return_lse: bool = False,
):
    """Per-row estimator loss (N,) over bucket tiles, differentiable (dense gradients).

    hidden (N, d), weight (n, d), bias (n,) | None, target (N,) int64 in [0, n); index: an
    LSHIndex built on weight (its codes, tables and hyperplanes). The tiles run through
    BucketTileFunction (the Triton kernels on CUDA, the twins above elsewhere); the target and
    shared-T terms are plain torch. Accumulates in fp32 (fp64 for fp64 inputs). With
    return_lse, returns (loss, log Z-hat) for a z-loss. A non-finite class row found at the
    index build makes every row's loss NaN where its logit is NaN/inf, as the searches'
    candidates do (nonfinite.py). num_uniform=0 warns once (a softmax over S only).
    """
    acc = acc_dtype(hidden.dtype)
    n = weight.shape[0]
    q_codes = index.query_codes(hidden.detach())  # (N, L) int32
    k_codes = index.codes  # (n, L) int32
    y = target.long()
    tiles = BucketTileFunction.apply(
        hidden, weight, bias, y, q_codes, k_codes, index.sorted_ids, index.offsets
    ).to(acc)  # (L, N)
    h = hidden.to(acc)
    z_y = (h * weight[y].to(acc)).sum(1)
    if bias is not None:
        z_y = z_y + bias[y].to(acc)
    terms = [tiles.T, z_y.unsqueeze(1)]
    if num_uniform:
        t = torch.randint(0, n, (num_uniform,), generator=generator, device=hidden.device)
        z_t = h @ weight[t].to(acc).T  # the dense N x |T| product
        if bias is not None:
            z_t = z_t + bias[t].to(acc)
        # a draw is a hit when it shares a bucket with the query (it is in S_i) or is the target
        hit = (q_codes.long().unsqueeze(1) == k_codes[t].long().unsqueeze(0)).any(2)
        hit = hit | (t == y.unsqueeze(1))
        logw = math.log(n / num_uniform)
        terms.append(torch.logsumexp((z_t + logw).masked_fill(hit, float("-inf")), 1, True))
    else:
        warn_no_uniform(n, n - 1)
    if index.any_nonfinite is not None:  # a NaN/inf class at the build: in every row's S
        # (once: not where its bucket or the target holds it already), so the row is NaN
        # where its logit is NaN or +inf and its gradient where torch's is (p x inf)
        c = index.first_nonfinite
        z_bad = h @ weight[c].to(acc)
        if bias is not None:
            z_bad = z_bad + bias[c].to(acc)
        held = (q_codes.long() == k_codes[c].long()).any(1) | (y == c)
        keep = index.any_nonfinite & ~held
        terms.append(torch.where(keep, z_bad, float("-inf")).unsqueeze(1))
    lse = torch.logsumexp(torch.cat(terms, dim=1), dim=1)
    loss = nan_at_inf_lse(lse - z_y, lse)  # NaN at a +inf logit, as torch
    return (loss, lse) if return_lse else loss
