"""Input validation shared by every entry point.

Every check here runs in Python on shapes, dtypes and devices only, before any kernel, and
never reads tensor data (no host sync). Value checks that need the data (labels in range,
finite inputs) are separate and opt-in, see ``check_target_values`` / ``check_finite``.
"""

from __future__ import annotations

import numbers
import operator

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
REDUCTIONS = ("none", "mean", "sum")


def _desc(t: torch.Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def check_tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_loss_inputs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[int, int, int]:
    """Validate shapes, dtypes and devices of one loss call; return (N, n, d).

    hidden: (N, d) float; weight: (n, d) float of the same dtype family; target: (N,) integer;
    bias: (n,) float or None. All on one device.
    """
    check_tensor("hidden", hidden)
    check_tensor("weight", weight)
    check_tensor("target", target)
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be 2-D (N, d), got {_desc(hidden)}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (n, d), got {_desc(weight)}")
    N, d = hidden.shape
    n, dw = weight.shape
    if dw != d:
        raise ValueError(
            f"hidden and weight disagree on d: hidden is (N={N}, d={d}) but weight is "
            f"(n={n}, d={dw})"
        )
    if n < 1:
        raise ValueError(f"weight must have at least one class (n >= 1), got n={n}")
    if d < 1:
        raise ValueError(f"d must be >= 1, got d={d}")
    if hidden.dtype not in FLOAT_DTYPES:
        raise ValueError(f"hidden must be float32/float16/bfloat16/float64, got {hidden.dtype}")
    if weight.dtype not in FLOAT_DTYPES:
        raise ValueError(f"weight must be float32/float16/bfloat16/float64, got {weight.dtype}")
    if target.dim() != 1 or target.shape[0] != N:
        raise ValueError(f"target must be 1-D of length N={N}, got {_desc(target)}")
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"target must be an integer tensor (int64 preferred), got {target.dtype}")
    devices = {("hidden", hidden.device), ("weight", weight.device), ("target", target.device)}
    if bias is not None:
        check_tensor("bias", bias)
        if bias.dim() != 1 or bias.shape[0] != n:
            raise ValueError(f"bias must be 1-D of length n={n}, got {_desc(bias)}")
        if bias.dtype not in FLOAT_DTYPES:
            raise ValueError(f"bias must be a float tensor, got {bias.dtype}")
        devices.add(("bias", bias.device))
    if len({dev for _, dev in devices}) > 1:
        where = ", ".join(f"{name} on {dev}" for name, dev in sorted(devices, key=str))
        raise ValueError(f"all inputs must be on one device, got {where}")
    return N, n, d


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_int_option(name: str, value: object, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {rng}, got {value}")
    return value


def check_target_values(target: torch.Tensor, n: int, ignore_index: int) -> None:
    """Raise ValueError if a target is outside [0, n) and not ignore_index.

    On CPU this reads the data (cheap, no device). On CUDA it enqueues a device-side assert
    instead of copying to the host, so the training step keeps running asynchronously; a bad
    label then surfaces as a CUDA assertion at the next synchronisation. Inside torch.compile
    it is an asynchronous assert on every device (no data-dependent Python branch).
    """
    target = target.long()  # uint8/int16 would wrap n and ignore_index in the comparison
    bad = ((target < 0) | (target >= n)) & (target != ignore_index)
    if target.device.type == "cuda" or torch.compiler.is_compiling():
        torch._assert_async(~bad.any(), "target outside [0, n) and not ignore_index")
        return
    if target.numel() and bool(bad.any()):
        first = target[bad][0].item()
        raise ValueError(
            f"target values must be in [0, n={n}) or equal ignore_index={ignore_index}; "
            f"found {first} ({int(bad.sum())} bad of {target.numel()})"
        )


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise ValueError if t holds NaN or inf, naming the first bad row (reads the data:
    opt-in via validate=True)."""
    if t.numel() and not bool(torch.isfinite(t).all()):
        bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1) if t.dim() else None
        where = f" at row {int(bad.nonzero()[0, 0])}" if bad is not None else ""
        raise ValueError(f"{name} contains NaN or inf{where} ({_desc(t)})")


def as_ignore_index(ignore_index: object) -> int:
    """ignore_index as a Python int: any integer (numpy's too, as torch takes), not a bool."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise ValueError(f"ignore_index must be an int, got {ignore_index!r}")
    return operator.index(ignore_index)


def check_loss_options(
    *,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    num_candidates: int = 1,
    num_uniform: int = 0,
) -> None:
    """Options of every loss call (functional and modules)."""
    check_reduction(reduction)
    as_ignore_index(ignore_index)
    if not (
        isinstance(label_smoothing, numbers.Real)
        and not isinstance(label_smoothing, bool)
        and 0.0 <= label_smoothing <= 1.0
    ):
        raise ValueError(f"label_smoothing must be a float in [0, 1], got {label_smoothing!r}")
    check_int_option("num_candidates (|S|)", num_candidates, 1)
    check_int_option("num_uniform (|T|)", num_uniform, 0)


FAISS_INDEX_KINDS = ("flat", "ivf", "ivfpq")  # index/faiss.py builds them


def check_index_options(
    *,
    method: str = "auto",
    lsh_bits: int | None = None,
    lsh_tables: int = 8,
    faiss_index: str = "auto",
    refresh_every: int = 100,
) -> None:
    """Options of the modules that own a candidate index."""
    if method not in ("auto", "full", "faiss", "lsh", "uniform"):
        raise ValueError(f"method must be auto/full/faiss/lsh/uniform, got {method!r}")
    check_int_option("lsh_tables (L)", lsh_tables, 1, 256)
    if lsh_bits is not None:
        check_int_option("lsh_bits (K)", lsh_bits, 1, 20)
    if faiss_index not in ("auto", *FAISS_INDEX_KINDS):
        raise ValueError(
            f"faiss_index must be auto/{'/'.join(FAISS_INDEX_KINDS)}, got {faiss_index!r}"
        )
    check_int_option("refresh_every", refresh_every, 1)


def check_module_weight(
    weight: torch.Tensor, bias: torch.Tensor | None, rows: int, dim: int
) -> None:
    """A module's weight (rows, dim) and bias (rows,) still have the sizes it was built for:
    weight.data replaced by a tensor of another size would leave num_classes, dim and the
    index stale (a silent wrong n or an IndexError); say so instead (shapes only, no sync)."""
    shape = tuple(weight.shape)
    if shape != (rows, dim) or (bias is not None and tuple(bias.shape) != (rows,)):
        got = f"weight {shape}" + (f", bias {tuple(bias.shape)}" if bias is not None else "")
        raise ValueError(
            f"this module was built for weight ({rows}, {dim}) but now has {got}: "
            "weight.data was replaced by a tensor of another size; make a new "
            "SampledSoftmaxLoss for the new number of classes"
        )
