"""Old module paths, kept importable: each name maps to the module that now holds the code.

A sys.modules alias (not a file at the old path) keeps `git mv` history whole and makes
`import triton_softmax.lsh`, `from triton_softmax.lsh import LSHIndex` and monkeypatching
through the old name act on the one real module.
"""

from __future__ import annotations

import importlib
import sys

MOVED = {
    "lsh": "index.simhash",
    "faiss_index": "index.faiss",
    "estimator": "reference.sampled_logits",
    "full": "reference.linear_ce",
    "bucket_tiles": "bucket_shared",
}

# names that moved out of a module that still exists: module -> {name: module now holding it}
MOVED_NAMES = {"distributed": {"ShardedSampledSoftmaxLoss": "loss"}}


def install(package: str) -> None:
    parent = sys.modules[package]
    for old, new in MOVED.items():
        module = importlib.import_module(f"{package}.{new}")
        sys.modules.setdefault(f"{package}.{old}", module)
        setattr(parent, old, module)
    for old, names in MOVED_NAMES.items():
        module = importlib.import_module(f"{package}.{old}")
        for name, new in names.items():
            setattr(module, name, getattr(importlib.import_module(f"{package}.{new}"), name))
