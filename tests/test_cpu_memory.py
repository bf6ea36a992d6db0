"""cpu_memory.keep_freed_memory: large blocks come from the heap and stay there when freed."""

import ctypes

import pytest
import torch

from triton_softmax import cpu_memory, keep_freed_memory


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _mallinfo():
    libc = cpu_memory._glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2


def test_keep_freed_memory_serves_large_blocks_from_the_heap_and_keeps_them():
    mallinfo = _mallinfo()
    size = 64 << 20
    try:
        assert keep_freed_memory() is True
        assert cpu_memory.freed_memory_kept()
        before = mallinfo()
        block = torch.empty(size, dtype=torch.uint8)
        during = mallinfo()
        assert during.hblkhd - before.hblkhd < size  # not a fresh mmap
        assert during.arena >= before.arena + size // 2 or before.fordblks >= size
        del block
        after = mallinfo()
        assert after.arena >= during.arena  # the heap did not give it back
        assert after.fordblks >= size  # it is free in the heap, for the next step
    finally:
        assert keep_freed_memory(False) is True
    assert not cpu_memory.freed_memory_kept()
    before = mallinfo()
    block = torch.empty(size, dtype=torch.uint8)
    # glibc's defaults again: a block this large is mapped on its own (or reuses a free one)
    assert mallinfo().hblkhd - before.hblkhd >= size or before.fordblks >= size
    del block


def test_keep_freed_memory_is_false_without_glibc(monkeypatch):
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: None)
    assert keep_freed_memory() is False
    assert not cpu_memory.freed_memory_kept()


def test_explain_says_when_a_cpu_sampled_layer_runs_without_kept_memory():
    from triton_softmax import SampledSoftmaxLoss

    layer = SampledSoftmaxLoss(5000, 16, method="lsh")
    hint = "keep_freed_memory()"
    assert hint in layer.explain(64)
    assert hint not in SampledSoftmaxLoss(5000, 16, method="full").explain(64)
    if cpu_memory._glibc() is None:
        pytest.skip("keep_freed_memory needs glibc")
    try:
        assert keep_freed_memory() is True
        assert hint not in layer.explain(64)
    finally:
        keep_freed_memory(False)
