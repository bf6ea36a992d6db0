"""triton_softmax: softmax cross-entropy over huge output spaces, exact where it must be.

Public API:
  SampledSoftmaxLoss              nn.Module: output layer + loss, owns the candidate index
  sampled_softmax_cross_entropy   functional form (you keep weight and index)
  sampled_softmax_from_candidates the estimator for candidate sets you retrieved yourself
  LSHIndex, FaissIndex            the candidate indexes
  exact_topk, rerank_topk, recall_at_k   inference helpers
  choose_method, explain          the dispatcher behind method="auto"
  ShardedSampledSoftmaxLoss       SampledSoftmaxLoss(shard=ShardSpec(group)) under its old name
  LossOptions, SamplingOptions, IndexOptions, DriftOptions, GradOptions, ShardSpec
                                  the module's and dispatcher's option objects (options.py)
  UniformSampler, LogUniformSampler, CategoricalSampler   proposals for T (log-Q corrected)
  FusedSparseAdam                 torch.optim.SparseAdam in one fused pass over touched rows
  keep_freed_memory               on a CPU: keep freed memory for reuse (cpu_memory.py)
"""

from . import _compat
from .cpu_memory import keep_freed_memory
from .dispatch import Choice, choose_method, explain
from .index.faiss import FaissIndex, faiss_available
from .index.simhash import LSHIndex
from .loss import (
    SampledSoftmaxLoss,
    ShardedSampledSoftmaxLoss,
    exact_topk,
    make_index,
    recall_at_k,
    rerank_topk,
    sampled_softmax_cross_entropy,
    sampled_softmax_from_candidates,
)
from .optim import FusedSparseAdam
from .options import (
    DriftOptions,
    GradOptions,
    IndexOptions,
    LossOptions,
    SamplingOptions,
    ShardSpec,
)
from .samplers import CategoricalSampler, LogUniformSampler, UniformSampler

__all__ = [
    "CategoricalSampler",
    "Choice",
    "DriftOptions",
    "GradOptions",
    "IndexOptions",
    "LossOptions",
    "SamplingOptions",
    "ShardSpec",
    "FaissIndex",
    "FusedSparseAdam",
    "LSHIndex",
    "LogUniformSampler",
    "SampledSoftmaxLoss",
    "ShardedSampledSoftmaxLoss",
    "UniformSampler",
    "choose_method",
    "exact_topk",
    "explain",
    "faiss_available",
    "keep_freed_memory",
    "make_index",
    "recall_at_k",
    "rerank_topk",
    "sampled_softmax_cross_entropy",
    "sampled_softmax_from_candidates",
]
__version__ = "0.1.0"

_compat.install(__name__)  # triton_softmax.lsh, .faiss_index, .estimator, .full, .bucket_tiles
