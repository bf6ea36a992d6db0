"""Triton kernels, one file each, every one with a launcher and a PyTorch twin (see ops.py).

Launchers exported here are picked up by triton_softmax.ops by name. No bucket_table: the
refresh-time table build stays in torch on every device (see bucket_lookup.py for why).
"""

from .bucket_lookup import lsh_candidates, lsh_query  # noqa: F401
from .bucket_tiles import bucket_tile_lse, bucket_tile_lse_bwd  # noqa: F401
from .linear_ce import linear_ce_bwd, linear_ce_fwd  # noqa: F401
from .list_scores import list_topk  # noqa: F401
from .sampled_logits import (  # noqa: F401
    grad_hidden,
    sampled_logits_bwd,
    sampled_logits_coef,
    sampled_logits_fwd,
)
from .scatter_grad import scatter_grad_weight  # noqa: F401
from .simhash import simhash_codes  # noqa: F401
from .sparse_adam import sparse_adam_update  # noqa: F401
