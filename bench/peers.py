"""The tools users would otherwise pick, imported lazily so a missing one is a visible skip.

Each peer is a loss function `fn(hidden (N, d), weight (n, d), target (N,)) -> 0-d loss`
over the same inputs as our paths. A peer that does not import, or needs a device this run
does not have, is recorded with status "skipped" and the reason; it never gets a time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PeerSpec:
    """module: what must import; make(module) -> LossFn; cuda_only: skipped on CPU runs."""

    module: str
    make: Callable[[object], LossFn]
    cuda_only: bool
    description: str


def _cce(mod) -> LossFn:
    # Cut Cross-Entropy (apple/ml-cross-entropy): linear_cross_entropy(e, c, targets).
    return lambda h, w, y: mod.linear_cross_entropy(h, w, y)


def _liger(mod) -> LossFn:
    # Liger-Kernel: LigerFusedLinearCrossEntropyLoss()(lin_weight, _input, target).
    loss = mod.LigerFusedLinearCrossEntropyLoss()

    def fn(h, w, y):
        out = loss(w, h, y)
        return out[0] if isinstance(out, tuple) else out

    return fn


PEERS: dict[str, PeerSpec] = {
    "cce": PeerSpec("cut_cross_entropy", _cce, True, "Cut Cross-Entropy linear_cross_entropy"),
    "liger": PeerSpec(
        "liger_kernel.transformers", _liger, True, "Liger-Kernel LigerFusedLinearCrossEntropyLoss"
    ),
}


def plain_torch_loss(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The baseline every user has: F.cross_entropy(h @ W.T, y) (materialises (N, n) logits)."""
    return F.cross_entropy(h @ w.T, y)


def load_peer(name: str, device: str) -> tuple[LossFn | None, str | None]:
    """(loss fn, None) when the peer imports and can run on `device`, else (None, reason)."""
    spec = PEERS[name]
    try:
        mod = importlib.import_module(spec.module)
    except Exception as exc:  # ImportError, or a broken install raising anything else
        return None, f"{spec.module} does not import: {type(exc).__name__}: {exc}"
    if spec.cuda_only and device != "cuda":
        return None, f"{spec.module} imports but runs only on CUDA (this run: {device})"
    try:
        return spec.make(mod), None
    except Exception as exc:
        return None, f"{spec.description} unavailable: {type(exc).__name__}: {exc}"
