"""method="auto": choose full, faiss or lsh from the problem's sizes, dtype and device.

The crossovers (the class count n above which a sampled path beats the exact one) live in a
small table per device class. Each entry names where it came from; an entry that no
benchmark record backs says so. The choice is made once per (n, d, N, dtype, device) and
cached by the caller; it reads no tensor data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .faiss_index import FAISS_IMPORT_ERROR, faiss_available

METHODS = ("auto", "full", "faiss", "lsh")

# n at which the lsh path overtakes the exact path, per device class.
DEFAULT_CROSSOVERS: dict[str, dict[str, object]] = {
    "cpu": {"lsh": 50_000, "faiss": 200_000, "source": "provisional default (not yet measured)"},
    "cuda": {"lsh": 500_000, "faiss": 2_000_000, "source": "provisional default (not yet measured)"},
}


@dataclass(frozen=True)
class Choice:
    method: str
    reason: str
    inputs: dict = field(default_factory=dict)

    def explain(self) -> str:
        seen = ", ".join(f"{k}={v}" for k, v in self.inputs.items())
        return f"method={self.method}: {self.reason} [{seen}]"


def choose_method(
    requested: str,
    n: int,
    d: int,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    num_candidates: int,
    num_uniform: int,
    label_smoothing: float = 0.0,
    table: dict | None = None,
) -> Choice:
    """Resolve `requested` (auto/full/faiss/lsh) into the path that will run, with the reason."""
    if requested not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {requested!r}")
    inputs = dict(n=n, d=d, N=batch, dtype=str(dtype).replace("torch.", ""), device=device.type,
                  S=num_candidates, T=num_uniform)
    if requested == "full":
        return Choice("full", "asked for the exact path", inputs)
    if num_candidates + num_uniform >= n:
        return Choice("full", f"|S|+|T| = {num_candidates + num_uniform} >= n = {n}: "
                      "sampling saves nothing, so the exact loss is computed", inputs)
    if label_smoothing:
        if requested != "auto":
            raise ValueError(
                f"label_smoothing={label_smoothing} needs the full path (its gradient touches "
                f"every class), but method={requested!r}"
            )
        return Choice("full", "label smoothing needs every class: exact path", inputs)
    if requested == "faiss":
        if not faiss_available():
            raise ImportError(f"method='faiss' but faiss does not import: {FAISS_IMPORT_ERROR}")
        return Choice("faiss", "asked for the faiss path", inputs)
    if requested == "lsh":
        return Choice("lsh", "asked for the lsh path", inputs)
    table = table or DEFAULT_CROSSOVERS
    entry = table.get(device.type, table["cpu"])
    cross = int(entry["lsh"])
    if n < cross:
        return Choice("full", f"n = {n} < lsh crossover {cross} on {device.type} "
                      f"({entry['source']})", inputs)
    return Choice("lsh", f"n = {n} >= lsh crossover {cross} on {device.type} "
                  f"({entry['source']})", inputs)
