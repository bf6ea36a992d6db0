"""The output layer's parameters: a fresh weight (and bias), a tied weight, or a shard's rows."""

from __future__ import annotations

import math

import torch
from torch import nn

from . import checks


def init_parameters(
    sharding, num_classes, dim, bias, weight, device, dtype, seed
) -> tuple[nn.Parameter, nn.Parameter | None, int, int]:
    """(weight (rows, d), bias (rows,) or None, n, d) for SampledSoftmaxLoss.__init__.

    sharding: the module's ShardedPath or None (then rows = this shard's [lo, hi));
    weight: a Parameter to tie to (checked against num_classes / dim) or None: a fresh one,
    uniform in +-1/sqrt(d) (a shard's rows seeded by `seed`, so every rank agrees)."""
    if sharding is not None:
        from .distributed import init_shard_rows

        lo, hi = sharding.shard
        if weight is not None:
            if not isinstance(weight, nn.Parameter) or tuple(weight.shape) != (hi - lo, dim):
                raise ValueError(f"weight must be an nn.Parameter of shape ({hi - lo}, {dim})")
        else:
            weight = nn.Parameter(init_shard_rows(lo, hi, dim, seed, device, dtype))
        rows = hi - lo
    elif weight is not None:
        if not isinstance(weight, nn.Parameter) or weight.dim() != 2:
            raise ValueError("weight must be a 2-D nn.Parameter (n, d) to tie to")
        if num_classes is not None and num_classes != weight.shape[0]:
            raise ValueError(f"num_classes={num_classes} but weight has n={weight.shape[0]}")
        if dim is not None and dim != weight.shape[1]:
            raise ValueError(f"dim={dim} but weight has d={weight.shape[1]}")
        num_classes, dim = weight.shape
        rows = num_classes
    else:
        if num_classes is None or dim is None:
            raise ValueError("give num_classes and dim, or a weight Parameter to tie to")
        checks.check_int_option("num_classes", num_classes, 1)
        checks.check_int_option("dim", dim, 1)
        bound = 1.0 / math.sqrt(dim)
        w = torch.empty(num_classes, dim, device=device, dtype=dtype).uniform_(-bound, bound)
        weight = nn.Parameter(w)
        rows = num_classes
    b = nn.Parameter(torch.zeros(rows, device=weight.device, dtype=weight.dtype)) if bias else None
    return weight, b, int(num_classes), int(dim)
