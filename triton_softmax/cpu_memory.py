"""Keep freed memory in the process on a CPU: the sampled step's large buffers then stop
page-faulting.

glibc's malloc serves every block over its mmap threshold (at most 32 MB) with a fresh
mmap and unmaps it when freed. A sampled step on a CPU allocates many such buffers (the
gathered candidate rows, (N, M, d); the sparse gradient's rows; FAISS's and the clusters
search's score buffers) and the first touch of every 4 KB page of each one is a page fault
that the kernel answers with a zeroed page: at n = 1e6, N = 256, |S| = |T| = 512 on one
thread the faults were half of the step (this project's CPU, 2026-11-30). Keeping freed
blocks in the heap instead (no mmap for large blocks, no trimming of the heap's top) lets
the next step reuse pages that are already mapped.

This changes the allocator of the whole process, so the library never does it on its own:
call `keep_freed_memory()` once, before training, or start Python with the same glibc
settings in the environment:

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=67108864 python ...

The cost: the process's resident memory no longer shrinks after a peak (freed memory stays
mapped for reuse). Other allocators (jemalloc, tcmalloc through LD_PRELOAD, as PyTorch's CPU
performance guide suggests) avoid the faults their own way; then this does nothing useful.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
# glibc's documented defaults, restored by keep_freed_memory(False)
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_TOP_PAD = 128 * 1024
DEFAULT_MMAP_MAX = 65536
KEEP_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: never trim below 2 GB of free top
KEEP_TOP_PAD = 64 << 20  # grow the heap 64 MB at a time

_state = {"kept": False}


@functools.lru_cache(maxsize=1)
def _glibc():
    """The C library if it is glibc (it has mallopt and gnu_get_libc_version), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory(enable: bool = True) -> bool:
    """Keep freed memory mapped in the process for reuse (enable=True), or go back to
    glibc's documented defaults (enable=False; its dynamic mmap threshold stays off).
    Returns True when the setting took effect: False where the C library is not glibc
    (macOS, musl), where it changes nothing."""
    libc = _glibc()
    if libc is None:
        return False
    if enable:
        settings = (
            (M_MMAP_MAX, 0),
            (M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD),
            (M_TOP_PAD, KEEP_TOP_PAD),
        )
    else:
        settings = (
            (M_MMAP_MAX, DEFAULT_MMAP_MAX),
            (M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD),
            (M_TOP_PAD, DEFAULT_TOP_PAD),
        )
    ok = all(libc.mallopt(param, value) == 1 for param, value in settings)
    _state["kept"] = bool(enable and ok)
    return ok


def freed_memory_kept() -> bool:
    """Whether keep_freed_memory() is in effect (set by this module; the environment
    variables in the module docstring are not seen here)."""
    return _state["kept"]


def memory_hint(method: str, weight: torch.Tensor) -> str:
    """The explain() suffix of a sampled layer whose weight is on a CPU while freed memory
    goes back to the OS; empty otherwise."""
    if method == "full" or weight.is_cuda or freed_memory_kept():
        return ""
    return (
        "; CPU: freed memory goes back to the OS, so every step's large buffers page-fault "
        "again (triton_softmax.keep_freed_memory() keeps it)"
    )
