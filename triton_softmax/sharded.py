"""The module's sharded path: what SampledSoftmaxLoss(shard=ShardSpec(...)) adds (composition).

This rank owns rows [lo, hi) = `shard` of the n classes and its own index over them; hidden
and targets are replicated over the group (the maths, the cost and how to combine with data
parallelism: distributed.py). Options the sharded Functions do not implement are refused at
construction with a ValueError naming the option and why (`check_shardable`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from .distributed import (
    CommCounter,
    _group_rank_world,
    build_shard_candidates,
    check_bounds,
    shard_bounds,
    sharded_cross_entropy,
    sharded_sampled_softmax_from_candidates,
    uniform_split,
)
from .options import DriftOptions, LossOptions, SamplingOptions, ShardSpec

# option (as the flat keyword names it) -> why the sharded path cannot take it yet
NOT_SHARDABLE = {
    "method='uniform'": "each rank retrieves its shard's share of S from its own index; S = "
    "{target} with T alone is not split over the shards yet",
    "z_loss": "the sharded Functions combine lse over ranks but add no z-loss term yet",
    "softcap": "the sharded Functions have no soft-capped logits (the twin is single-device)",
    "candidate_scheme": "each rank draws its own T per example (stratified); shared-sample "
    "and bucket schemes are single-device",
    "sampler": "the stratified T of the sharded estimator is uniform per shard",
    "drift_every": "the drift check's exact pass is single-device",
    "refresh_drift": "drift-triggered refreshes would need every rank to agree on the drift",
    "target_mass": "the probe's exact pass and the probe widths would need every rank's rows",
    "search_min_mass": "the probe's exact pass would need every rank's rows",
}


def check_shardable(options: dict[str, Any]) -> None:
    """options: from_kwargs's {"loss": LossOptions, "sampling": ..., "index": ..., ...}."""
    loss: LossOptions = options["loss"]
    sampling: SamplingOptions = options["sampling"]
    drift: DriftOptions = options["drift"]
    used = {
        "method='uniform'": options["index"].method == "uniform",
        "z_loss": bool(loss.z_loss),
        "softcap": bool(loss.softcap),
        "candidate_scheme": sampling.scheme != "per_example",
        "sampler": not sampling.uniform,
        "drift_every": drift.every is not None,
        "refresh_drift": drift.refresh_drift is not None,
        "target_mass": options["index"].target_mass is not None,
        "search_min_mass": options["index"].search_min_mass not in (None, "auto"),
    }
    for name, on in used.items():
        if on:
            raise ValueError(f"{name} cannot be used with a shard spec: {NOT_SHARDABLE[name]}")


class ShardedPath:
    """Group, rank, bounds, this rank's shard and |T_r|, the communication counter."""

    def __init__(self, spec: ShardSpec, num_classes: int, num_uniform: int) -> None:
        self.spec = spec
        self.group = spec.group
        self.rank, self.world_size = _group_rank_world(spec.group)
        bounds = spec.bounds
        if bounds is None:
            bounds = shard_bounds(num_classes, self.world_size)
        self.bounds = check_bounds(bounds, num_classes, self.world_size)
        self.shard = self.bounds[self.rank]
        self.uniform_counts = uniform_split(num_uniform, self.bounds)
        self.comm = CommCounter()

    @property
    def rows(self) -> int:
        lo, hi = self.shard
        return hi - lo

    def generator_key(self, seed: int, steps: int) -> int:
        """Different on every rank, repeatable per step."""
        return ((seed * 1_000_003 + steps) * 1_000_033 + self.rank) % (1 << 63)

    def full_loss(self, hidden, weight, bias, target, num_classes: int, loss: LossOptions):
        return sharded_cross_entropy(
            hidden,
            weight,
            target,
            bias,
            shard=self.shard,
            num_classes=num_classes,
            group=self.group,
            reduction=loss.reduction,
            ignore_index=loss.ignore_index,
            label_smoothing=loss.label_smoothing,
            comm=self.comm,
        )

    def candidates(self, retrieved, target, ignore_index: int, generator):
        """This rank's (cand_ids local, cand_logw) from its retrieved ids."""
        target = target.long()  # uint8/int16: ignore_index would wrap in the comparison
        safe = torch.where(target != ignore_index, target, torch.zeros_like(target))
        return build_shard_candidates(
            retrieved, safe, self.shard, self.uniform_counts[self.rank], generator
        )

    def estimator_loss(self, hidden, weight, bias, target, cand_ids, cand_logw, loss, grad):
        return sharded_sampled_softmax_from_candidates(
            hidden,
            weight,
            target,
            cand_ids,
            cand_logw,
            bias,
            shard=self.shard,
            group=self.group,
            reduction=loss.reduction,
            ignore_index=loss.ignore_index,
            sparse_grad=grad.sparse,
            deterministic=grad.deterministic,
            comm=self.comm,
        )

    def merge_topk(self, s: torch.Tensor, i: torch.Tensor, k: int):
        """This shard's top-k (local ids) -> the global top-k over the group (all-gather)."""
        N = s.shape[0]
        i = torch.where(i >= 0, i + self.shard[0], i)
        pad = k - s.shape[1]  # a shard smaller than k
        s = torch.cat([s.float(), s.new_full((N, pad), float("-inf")).float()], 1)
        i = torch.cat([i, i.new_full((N, pad), -1)], 1)
        if self.world_size > 1:
            s_all = [torch.empty_like(s) for _ in range(self.world_size)]
            i_all = [torch.empty_like(i) for _ in range(self.world_size)]
            dist.all_gather(s_all, s.contiguous(), group=self.group)
            dist.all_gather(i_all, i.contiguous(), group=self.group)
            s, i = torch.cat(s_all, 1), torch.cat(i_all, 1)
        s, pos = torch.topk(s, k, dim=1)
        i = torch.gather(i, 1, pos)
        return s, torch.where(torch.isfinite(s), i, torch.full_like(i, -1))

    def stats(self) -> dict:
        return dict(shard=self.shard, comm_calls=self.comm.calls, comm_bytes=self.comm.bytes)
