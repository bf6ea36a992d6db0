"""The exact softmax cross-entropy, computed over chunks of classes (PyTorch; CPU path and twin).

    z_ij   = h_i . W_j + b_j                   for all n classes
    lse_i  = log sum_j exp(z_ij)
    loss_i = lse_i - (1 - eps) z_{i,y_i} - eps/n sum_j z_ij      (eps = label smoothing)
    dz_ij  = softmax_ij - (1 - eps) 1[j = y_i] - eps/n

Classes are processed in chunks, so memory is O(N * chunk) and an (N, n) logits tensor is
never allocated: the forward keeps a running log-sum-exp, the backward recomputes each chunk's
logits and writes that chunk's rows of dW. This is the oracle for the fused Triton kernel and
the CPU path, so it is written for a CPU:
  - a chunk's logits (CHUNK_ELEMENTS) stay in a core's L2 cache from the product that writes
    them to the last pass that reads them, and the backward's passes over them are in place;
  - on a CPU with several intra-op threads, the classes are split into one contiguous part
    per thread and each part runs its chunks on its own worker thread with one intra-op
    thread (class_parts). Small in-cache operations on all threads each end in an OpenMP
    barrier; on a shared machine one descheduled thread stalls every barrier (measured on 2
    vCPUs at load 10: 1 MiB chunks on 2 OpenMP threads 30 s a step, on 1 thread 0.57 s).
    The parts' results are combined in part order: the result depends on the thread count,
    never on the scheduling (two runs are bitwise equal).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from .sampled_logits import _cap_slope, acc_dtype, nan_at_inf_lse

# Logit elements per chunk (N * chunk): 256 Ki fp32 values = 1 MiB, inside one core's L2.
CHUNK_ELEMENTS = 1 << 18
# but at least this many classes: a narrower product runs the matmul below its speed
MIN_CHUNK = 256


def class_chunk(N: int, n: int) -> int:
    return max(MIN_CHUNK, min(n, CHUNK_ELEMENTS // max(N, 1)))


def class_parts(n: int, chunk: int, device: torch.device) -> list[tuple[int, int]]:
    """Contiguous class ranges [lo, hi), one per worker thread, each a whole number of
    chunks: as many as torch's intra-op threads on a CPU with OpenMP (at most one per
    chunk), else one."""
    workers = torch.get_num_threads() if device.type == "cpu" and _openmp() else 1
    chunks = -(-n // chunk)
    parts = max(1, min(workers, chunks))
    bounds = [min(n, (chunks * k // parts) * chunk) for k in range(parts + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


_POOL: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _openmp() -> bool:
    # set_num_threads is per OS thread only under the OpenMP backend (ATen's native pool
    # is one process-wide pool)
    return "OpenMP" in torch.__config__.parallel_info()


def _on_parts(fn, parts: list[tuple[int, int]]) -> list:
    """[fn(lo, hi) for each part]: inline for one part, else one worker thread per part,
    each with one intra-op thread and the caller's grad mode."""
    if len(parts) == 1:
        return [fn(*parts[0])]
    threads = torch.get_num_threads()
    grad = torch.is_grad_enabled()

    def task(lo, hi):
        torch.set_num_threads(1)  # this OS thread only (OpenMP and MKL per-thread settings)
        with torch.set_grad_enabled(grad):
            return fn(lo, hi)

    with _POOL_LOCK:
        # a new pool when it is too small, or in a forked child (the parent's worker
        # threads do not exist there: its queued tasks would never run)
        key = (os.getpid(), len(parts))
        pool = _POOL.get(key)
        if pool is None:
            for old in _POOL.values():
                old.shutdown(wait=False)
            _POOL.clear()
            pool = _POOL[key] = ThreadPoolExecutor(len(parts), "triton_softmax_ce")
    try:
        return [f.result() for f in [pool.submit(task, lo, hi) for lo, hi in parts]]
    finally:
        # set_num_threads also stores a process-wide default that threads created later
        # start with: put the caller's back
        torch.set_num_threads(threads)


def _chunk_logits(h, weight, bias, lo, hi, acc, softcap=0.0, w=None):
    """z (N, hi - lo) in acc: h @ W[lo:hi].T + b[lo:hi], soft-capped; a fresh tensor.
    w: W[lo:hi] already in acc, when the caller has it."""
    w = weight[lo:hi].to(acc) if w is None else w
    z = torch.addmm(bias[lo:hi].to(acc), h, w.T) if bias is not None else h @ w.T
    if softcap:  # cap_logits in place: the same operations in the same order
        z.div_(softcap).tanh_().mul_(softcap)
    return z


def chunked_ce_fwd_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
    chunk: int | None = None,
    softcap: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """loss (N,), lse (N,) in the accumulation dtype. target: (N,) int64 in [0, n).

    softcap c > 0: logits c tanh(z / c) (twin only; the fused kernel does not implement it).
    """
    N, n = hidden.shape[0], weight.shape[0]
    acc = acc_dtype(hidden.dtype)
    chunk = chunk or class_chunk(N, n)
    h = hidden.to(acc)
    sum_logits = bool(label_smoothing and softcap)

    def part(p_lo, p_hi):
        """(lse, z_t, z_sum) over the classes [p_lo, p_hi)."""
        lse = torch.full((N,), float("-inf"), dtype=acc, device=hidden.device)
        z_sum = torch.zeros(N, dtype=acc, device=hidden.device) if sum_logits else None
        # The target logit is read from its chunk's logits, the values the lse sums: a
        # confident row's loss is then exactly 0, as torch's, even for float32 logits near 1e30.
        z_t = torch.zeros(N, dtype=acc, device=hidden.device)
        for lo in range(p_lo, p_hi, chunk):
            hi = min(p_hi, lo + chunk)
            z = _chunk_logits(h, weight, bias, lo, hi, acc, softcap)
            in_chunk = (target >= lo) & (target < hi)
            col = (target - lo).clamp(0, hi - lo - 1).unsqueeze(1)
            z_t = torch.where(in_chunk, z.gather(1, col).squeeze(1), z_t)
            if sum_logits:
                z_sum += z.sum(1)
            lse = torch.logaddexp(lse, torch.logsumexp(z, dim=1))
        return lse, z_t, z_sum

    parts = class_parts(n, chunk, hidden.device)
    results = _on_parts(part, parts)
    lse, z_t, z_sum = results[0]
    for (lo, hi), (lse_k, z_t_k, z_sum_k) in zip(parts[1:], results[1:]):
        lse = torch.logaddexp(lse, lse_k)
        z_t = torch.where((target >= lo) & (target < hi), z_t_k, z_t)
        if sum_logits:
            z_sum = z_sum + z_sum_k
    loss = lse - (1.0 - label_smoothing) * z_t
    if sum_logits:
        loss = loss - label_smoothing / n * z_sum
    elif label_smoothing:
        # sum_j z_ij is linear in h: h . sum_j W_j + sum_j b_j, no logits needed.
        z_sum = h @ weight.to(acc).sum(0)
        if bias is not None:
            z_sum = z_sum + bias.to(acc).sum()
        loss = loss - label_smoothing / n * z_sum
    return nan_at_inf_lse(loss, lse), lse


@torch.no_grad()  # it computes the gradients itself, with out= products
def chunked_ce_bwd_ref(
    grad_loss: torch.Tensor,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    lse: torch.Tensor,
    label_smoothing: float = 0.0,
    chunk: int | None = None,
    softcap: float = 0.0,
    target_grad: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(dh (N, d), dW (n, d), db (n,) or None), in the accumulation dtype.

    target_grad: the gradient of the one-hot and smoothing terms when it differs from
    grad_loss's (z-loss scales only the softmax part); default grad_loss.
    """
    N, n = hidden.shape[0], weight.shape[0]
    acc = lse.dtype
    chunk = chunk or class_chunk(N, n)
    h = hidden.to(acc)
    g = grad_loss.to(acc).unsqueeze(1)
    g_t = g if target_grad is None else target_grad.to(acc).unsqueeze(1)
    # what each row subtracts at its target (the one-hot term) and at every class (smoothing)
    t_hot = (-(1.0 - label_smoothing) * g_t).squeeze(1)
    t_all = g_t * (label_smoothing / n) if label_smoothing else None
    lse_col = lse.unsqueeze(1)
    dW = torch.empty(weight.shape, dtype=acc, device=weight.device)
    db = torch.empty(n, dtype=acc, device=weight.device) if bias is not None else None
    rows = torch.arange(N, device=hidden.device)

    def part(p_lo, p_hi):
        """dh's part from the classes [p_lo, p_hi); writes their rows of dW and db."""
        dh = torch.zeros_like(h)
        for lo in range(p_lo, p_hi, chunk):
            hi = min(p_hi, lo + chunk)
            w = weight[lo:hi].to(acc)
            dz = _chunk_logits(h, weight, bias, lo, hi, acc, softcap, w)
            slope = _cap_slope(dz, softcap)
            dz.sub_(lse_col).exp_().mul_(g)  # g * softmax, in place of the logits
            in_chunk = (target >= lo) & (target < hi)
            col = (target - lo).clamp(0, hi - lo - 1)
            # rows are distinct: one element per row, zero where the target is elsewhere
            dz.index_put_((rows, col), torch.where(in_chunk, t_hot, 0.0), accumulate=True)
            if t_all is not None:
                dz.sub_(t_all)
            if softcap:
                dz.mul_(slope)
            dh.addmm_(dz, w)
            torch.mm(dz.T, h, out=dW[lo:hi])
            if db is not None:
                torch.sum(dz, 0, out=db[lo:hi])
        return dh

    parts = _on_parts(part, class_parts(n, chunk, hidden.device))
    dh = parts[0]
    for dh_k in parts[1:]:
        dh = dh.add_(dh_k)
    return dh, dW, db
