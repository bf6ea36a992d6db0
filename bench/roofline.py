"""Byte and FLOP models of the library's kernels, and the roofline bound they imply.

Each model gives the *compulsory* work of one call from the problem sizes alone: the bytes a
perfect implementation must move between memory and the chip (every input read once, every
output written once, no intermediate spilled) and the floating-point operations it must do
(a multiply-add counts 2; exp/log/compare are not counted). Achieved figures are these
divided by the measured time, so an implementation that re-reads data shows up as a low
fraction of the bound, never as more than 100 %.

Symbols: N rows (tokens), n classes, d hidden size, s bytes per element of hidden/weight
(4 fp32, 2 bf16), M candidates per row (|S| + |T|, the target included), L tables, K bits.

The bound of a call is max(bytes / B, flops / F), with B the measured copy bandwidth and F the
measured matmul FLOP/s of the device (see bench.sweep.measure_peaks); % of bound is
bound time / achieved time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Work:
    """What one call must do: bytes moved and floating-point operations."""

    bytes: float
    flops: float


def full_ce_fwd(N: int, n: int, d: int, s: int) -> Work:
    """Exact chunked cross-entropy forward (logits + online log-sum-exp + target logit).

    bytes = s (n d + N d) + 8 N (targets) + 2 * 4 N (loss, lse)
    flops = 2 N n d
    """
    return Work(s * (n * d + N * d) + 8 * N + 8 * N, 2.0 * N * n * d)


def full_ce_bwd(N: int, n: int, d: int, s: int) -> Work:
    """Exact chunked cross-entropy backward: recompute logits, dh = P W, dW = P^T h.

    bytes = s (n d + N d) (read W, h) + 4 n d (write dW, fp32) + 4 N d (write dh) + 12 N
    flops = 6 N n d (logits again, dh, dW: three GEMMs of N x n x d)
    """
    return Work(s * (n * d + N * d) + 4 * n * d + 4 * N * d + 12 * N, 6.0 * N * n * d)


def sampled_fwd(N: int, M: int, d: int, s: int) -> Work:
    """Sampled logits forward: gather the M candidate rows of each row, z, weighted LSE.

    bytes = s N M d (gathered rows; no reuse across rows assumed) + s N d (h)
            + 12 N M (int64 id + fp32 log-weight per candidate) + 8 N (target) + 8 N (out)
    flops = 2 N M d
    """
    return Work(s * N * M * d + s * N * d + 12 * N * M + 16 * N, 2.0 * N * M * d)


def sampled_bwd(N: int, M: int, d: int, s: int) -> Work:
    """Sampled logits backward: coefficients (z again), dh = sum_j coef_j W_j, dW rows.

    bytes = 2 s N M d (candidate rows read for z and for dh) + s N d (h) + 4 N d (dh)
            + 4 N (M + 1) d (one dW row per candidate and the target) + 12 N M
    flops = 6 N M d (z, dh, and the rank-1 rows coef_j h of dW)
    """
    return Work(
        2 * s * N * M * d + s * N * d + 4 * N * d + 4 * N * (M + 1) * d + 12 * N * M,
        6.0 * N * M * d,
    )


def simhash(rows: int, d: int, L: int, K: int, s: int) -> Work:
    """SimHash codes of `rows` vectors (keys at refresh: rows = n; queries: rows = N).

    bytes = s rows d + 4 L K (d + 2) (hyperplanes) + 4 rows L (int32 codes)
    flops = 2 rows L K d
    """
    return Work(s * rows * d + 4 * L * K * (d + 2) + 4 * rows * L, 2.0 * rows * L * K * d)


def lsh_lookup(N: int, L: int, B: int, C: int) -> Work:
    """Bucket lookup: read each query's L buckets (at most B ids each), rank, cap to C.

    bytes = 4 N L (codes) + 16 N L (two int64 CSR offsets) + 4 N L B (int32 ids read)
            + 8 N C (int64 ids written)
    flops = 0 (integer work only: the bound is bandwidth)
    """
    return Work(4 * N * L + 16 * N * L + 4 * N * L * B + 8 * N * C, 0.0)


def bound_seconds(work: Work, bandwidth: float, flops_per_s: float) -> float:
    """max(bytes / bandwidth, flops / FLOP/s): the time no implementation can beat."""
    t_mem = work.bytes / bandwidth if bandwidth > 0 else 0.0
    t_cmp = work.flops / flops_per_s if flops_per_s > 0 else 0.0
    return max(t_mem, t_cmp)


def achieved(work: Work, seconds: float, bandwidth: float, flops_per_s: float) -> dict:
    """Achieved GB/s and GFLOP/s, arithmetic intensity, and % of the roofline bound."""
    bound = bound_seconds(work, bandwidth, flops_per_s)
    return dict(
        bytes=work.bytes,
        flops=work.flops,
        intensity_flop_per_byte=work.flops / work.bytes if work.bytes else None,
        achieved_gbps=work.bytes / seconds / 1e9,
        achieved_gflops=work.flops / seconds / 1e9,
        bound_ms=bound * 1e3,
        bound_kind="compute"
        if work.flops / max(flops_per_s, 1e-30) > work.bytes / max(bandwidth, 1e-30)
        else "memory",
        pct_of_bound=100.0 * bound / seconds,
    )
