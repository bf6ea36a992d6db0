"""Spherical k-means on unit keys, for the clusters generator (clusters.py): Lloyd
iterations, the nearest-centroid assignment, list balancing, and the CSR layout of the lists.
Torch ops on the keys' device; the assignment is chunked so no (m, c) product is held."""

from __future__ import annotations

import math

import torch

ASSIGN_CHUNK = 1 << 14  # rows per assignment matmul on CUDA
# scores per assignment block on a CPU (4 MB): the product and its argmax stay in cache; at
# c = 1,000 centroids, 200,000 keys, 1 thread, 1,048-row blocks took 1.0 s where 16,384-row
# blocks took 2.7 s (AMD EPYC, 2026-11-30)
ASSIGN_SCORES = 1 << 20


def assign_nearest(keys: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(m,) int64: the centroid of largest cosine for every key (chunked matmul)."""
    out = torch.empty(keys.shape[0], dtype=torch.int64, device=keys.device)
    step = ASSIGN_CHUNK if keys.is_cuda else max(1, ASSIGN_SCORES // max(1, centroids.shape[0]))
    for lo in range(0, keys.shape[0], step):
        hi = min(keys.shape[0], lo + step)
        out[lo:hi] = (keys[lo:hi] @ centroids.T).argmax(dim=1)
    return out


def spherical_lloyd(
    keys: torch.Tensor, centroids: torch.Tensor, iters: int, gen: torch.Generator
) -> torch.Tensor:
    """Spherical k-means iterations: assign by cosine, centroid = normalised mean; an empty
    list is re-seeded with a random key. Returns unit centroids (c, D)."""
    c = centroids.shape[0]
    for _ in range(iters):
        a = assign_nearest(keys, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, a, keys)
        counts = torch.bincount(a, minlength=c)
        empty = counts == 0
        if bool(empty.any()):
            pick = torch.randint(keys.shape[0], (int(empty.sum()),), generator=gen)
            sums[empty] = keys[pick.to(keys.device)]
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return centroids


def lists_csr(assign: torch.Tensor, num_lists: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(order (m,) int64 positions sorted by list, offsets (num_lists + 1,) int64)."""
    order = torch.argsort(assign, stable=True)
    counts = torch.bincount(assign, minlength=num_lists)
    offsets = torch.zeros(num_lists + 1, dtype=torch.int64, device=assign.device)
    offsets[1:] = torch.cumsum(counts, 0)
    return order, offsets


def balance_lists(
    keys: torch.Tensor,
    cent: torch.Tensor,
    assign: torch.Tensor,
    gen: torch.Generator,
    balance: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split every list over balance x the mean size: sub-k-means into ceil(size / mean)
    parts, then equal chunks for any part still too large."""
    c = cent.shape[0]
    counts = torch.bincount(assign, minlength=c)
    mean = keys.shape[0] / c
    limit = max(1, int(balance * mean))
    big = (counts > limit).nonzero().flatten().tolist()
    if not big:
        return cent, assign
    new_cent = [cent]
    next_id = c
    for lst in big:
        members = (assign == lst).nonzero().flatten()
        parts = math.ceil(members.numel() / mean)
        sub = keys[members]
        init = torch.randperm(sub.shape[0], generator=gen)[:parts].to(sub.device)
        sub_c = spherical_lloyd(sub, sub[init].clone(), 3, gen)
        sub_a = assign_nearest(sub, sub_c)
        pieces = []
        for j in range(parts):
            pj = members[sub_a == j]
            pieces += list(torch.split(pj, limit)) if pj.numel() else []
        for j, piece in enumerate(pieces):
            if j == 0:
                lid = lst
            else:
                lid = next_id
                next_id += 1
            assign[piece] = lid
            cvec = torch.nn.functional.normalize(keys[piece].mean(0, keepdim=True), dim=1)
            if j == 0:
                cent[lst] = cvec[0]
            else:
                new_cent.append(cvec)
    return torch.cat(new_cent, dim=0), assign
