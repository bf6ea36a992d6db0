"""Test set-up: Triton kernels run under the interpreter where there is no GPU.

TRITON_INTERPRET must be set before triton.jit decorates the kernels, i.e. before
triton_softmax.kernels is imported, so it is set here, first.
"""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])

# Tolerances against a float64 reference, by input dtype.
TOL = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=1e-4, rtol=1e-4),
    torch.float16: dict(atol=2e-2, rtol=2e-2),
    torch.bfloat16: dict(atol=8e-2, rtol=8e-2),
}


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)


@pytest.fixture
def device():
    return "cuda" if HAS_CUDA else "cpu"


@pytest.fixture
def poison_kernel_outputs(monkeypatch):
    """Launcher outputs start as a value no kernel writes (float: NaN, int: -12345), so an
    element a kernel leaves unwritten fails the comparison with its twin. The kernel test
    files use it for every test (pytestmark)."""
    from triton_softmax.kernels import _utils

    def empty(shape, dtype, device):
        fill = float("nan") if dtype.is_floating_point else -12345
        return torch.full(shape, fill, dtype=dtype, device=device)

    monkeypatch.setattr(_utils, "empty", empty)
