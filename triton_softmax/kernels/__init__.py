"""Triton kernels, one file each, every one with a launcher and a PyTorch twin (see ops.py).

Launchers exported here, and the capacity checks (`*_fits`) of those that have limits, are
picked up by triton_softmax.ops by name; ops decides which calls run the twins instead. This
package imports nothing from triton_softmax outside kernels/ (tests/test_layers.py). No
bucket_table: the refresh-time table build stays in torch on every device (bucket_lookup.py
says why).
"""

from .bucket_lookup import (  # noqa: F401
    lsh_candidates,
    lsh_candidates_fits,
    lsh_query,
    lsh_query_fits,
)
from .bucket_tiles import bucket_tile_lse, bucket_tile_lse_bwd  # noqa: F401
from .linear_ce import linear_ce_bwd, linear_ce_fwd  # noqa: F401
from .linear_ce_chunked import linear_ce_chunked_bwd, linear_ce_chunked_fwd  # noqa: F401
from .list_scores import list_topk, list_topk_fits  # noqa: F401
from .list_tiles import list_tile_topk, list_tile_topk_fits  # noqa: F401
from .sampled_logits import (  # noqa: F401
    grad_hidden,
    sampled_logits_bwd,
    sampled_logits_coef,
    sampled_logits_fwd,
)
from .scatter_grad import scatter_grad_weight  # noqa: F401
from .simhash import simhash_codes  # noqa: F401
from .sparse_adam import sparse_adam_update  # noqa: F401
