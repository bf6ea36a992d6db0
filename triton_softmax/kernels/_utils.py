"""Small helpers shared by the kernel launchers (no kernels here).

Nothing in kernels/ imports from the package above it (tests/test_layers.py): the launchers
reject what their kernels do not compute (float64, too-large tables) and triton_softmax.ops
decides beforehand which calls go to the PyTorch twins instead.

INTERPRET is read once, at import, like triton.jit itself does: set TRITON_INTERPRET=1 before
triton_softmax.kernels is imported (tests/conftest.py does) to run the kernels on CPU.
"""

from __future__ import annotations

import os

import torch
import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def next_pow2(x: int) -> int:
    return triton.next_power_of_2(max(int(x), 1))


def configs(full: list[triton.Config]) -> list[triton.Config]:
    """The autotune list: all of `full` on a GPU, only its first entry under the interpreter
    (one config means no benchmarking, so tests pay for one run, not one per config)."""
    return full[:1] if INTERPRET else full


def tile_configs(rows, interpret_row, pre_hook=None) -> list[triton.Config]:
    """Autotune configs of a tl.dot kernel from (BLOCK_M, BLOCK_N, BLOCK_K, num_warps,
    num_stages) rows; under the interpreter the single `interpret_row` instead."""
    rows = [interpret_row] if INTERPRET else rows
    return [
        triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk},
            num_warps=w,
            num_stages=s,
            pre_hook=pre_hook,
        )
        for bm, bn, bk, w, s in rows
    ]


def prune_by_tile(limit: int, block_a: str, block_b: str):
    """early_config_prune dropping configs whose block_a * block_b tile exceeds `limit`
    elements (register pressure); keeps the smallest one if none fits."""

    def prune(cfgs, named_args, **kwargs):
        args = {**named_args, **kwargs}

        def size(c):
            a = c.kwargs.get(block_a, args.get(block_a))
            b = c.kwargs.get(block_b, args.get(block_b))
            return a * b

        fit = [c for c in cfgs if size(c) <= limit]
        return fit or [min(cfgs, key=size)]

    return prune


def empty(shape, dtype: torch.dtype, device) -> torch.Tensor:
    """Output allocation of every launcher (one place, so tests can poison it with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


def check_device(name: str, t: torch.Tensor, device: torch.device) -> None:
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device}")


def check_hidden_weight(hidden: torch.Tensor, weight: torch.Tensor) -> None:
    """Floating hidden (N, d) and weight (n, d) with the same d, else TypeError/ValueError."""
    check_float("hidden", hidden)
    check_float("weight", weight)
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"hidden (N, d) and weight (n, d) expected, got "
            f"{tuple(hidden.shape)} and {tuple(weight.shape)}"
        )


def check_devices(device: torch.device, **tensors: torch.Tensor | None) -> None:
    """check_device for every given tensor (None: an absent optional operand, skipped)."""
    for name, t in tensors.items():
        if t is not None:
            check_device(name, t, device)


# the operand dtypes the dot-product kernels compute on (fp32 accumulation, no fp64 path)
KERNEL_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def check_kernel_floats(op: str, **tensors: torch.Tensor | None) -> None:
    """TypeError unless every given tensor is float32/float16/bfloat16; ops.<op> sends float64
    calls to the PyTorch twin before they reach the launcher."""
    for name, t in tensors.items():
        if t is not None and t.dtype not in KERNEL_FLOATS:
            hint = (
                f" (ops.{op} runs float64 on the PyTorch twin)" if t.dtype == torch.float64 else ""
            )
            raise TypeError(
                f"{name} must be float32/float16/bfloat16 for the {op} kernel, got {t.dtype}{hint}"
            )


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise TypeError(f"{name} must be a float tensor, got {t.dtype}")
