"""method="auto": choose full, faiss or lsh from n, d, N, dtype and device, from measurements.

A crossover table per device class ("cpu", "cuda:sm90", ...) holds entries measured at some
(d, N, dtype): the class count n at which lsh and faiss overtake the exact path (null: not
within the measured range). The table used is, in order: the file written by the tune command
(`python -m triton_softmax.tune`) in the per-user cache directory ($XDG_CACHE_HOME or
~/.cache, then triton_softmax/crossovers.json), else the defaults shipped in
triton_softmax/crossovers/default.json, whose entries name the benchmark record files they
come from. A corrupt or foreign cache file is ignored with a warning.

The choice also respects: method forced by the caller; exact=True; |S| + |T| >= n (sampling
saves nothing); label smoothing (needs every class); faiss not importable; the full path's
working set against free device memory (CUDA). It reads no tensor data (no host sync) and is
made once per shape: callers cache it (functional.cached_choice, a bounded dict keyed by the
index options, sizes and device).

Speed alone is not the rule: a Choice made from the table carries `ranked`, the paths that
beat the exact one here, fastest first, then "full". The module (quality.py) measures the
captured softmax mass of each sampled path's candidates on a probe batch at its refreshes and
`choose_by_quality` keeps the fastest whose mass meets the target (target_mass when given,
else AUTO_TARGET_SHARE of the exact top-(|S| - 1) mass), never a faster one below it; full
is exact (mass 1).
"""

from __future__ import annotations

import functools
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .index.faiss import FAISS_IMPORT_ERROR, faiss_available

METHODS = ("auto", "full", "faiss", "lsh", "uniform")
TABLE_FORMAT = "triton_softmax.crossovers/1"
DEFAULT_TABLE_PATH = Path(__file__).parent / "crossovers" / "default.json"
# method="auto" without a target_mass: its candidates must capture this share of the mass the
# exact top-(|S| - 1) classes hold on the probe rows (quality.relative_target says why), else a
# slower path runs. Judged by P@1 at CPU-second budgets (2026-12-07, bench/results
# cpu-auto-share-{synset,lemma}-20261207): at 0.5 the lists read per query were tuned to 64 on
# WordNet synset (16 on lemma), a step 1.4x (1.3x) the 0.3 share's, whose lists were tuned to 16
# (8); P@1 after one minute on synset 0.698 at 0.5 against 0.937 at 0.3, which kept pace with
# the default faiss; neither share led at every budget to 4 minutes (docs/accuracy.md)
AUTO_TARGET_SHARE = 0.3


def cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "triton_softmax" / "crossovers.json"


def device_class(device: torch.device) -> str:
    """ "cpu", or "cuda:sm<major><minor>" by compute capability."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda:sm{major}{minor}"
    return device.type


def validate_table(table: object) -> dict:
    """Raise ValueError unless `table` is a crossover table of this format."""
    if not isinstance(table, dict) or table.get("format") != TABLE_FORMAT:
        raise ValueError(f"not a {TABLE_FORMAT} table")
    devices = table.get("devices")
    if not isinstance(devices, dict):
        raise ValueError("table has no 'devices' mapping")
    for dev, spec in devices.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("entries"), list):
            raise ValueError(f"device {dev!r} has no entry list")
        for e in spec["entries"]:
            for key in ("d", "N"):
                if not isinstance(e.get(key), int) or e[key] < 1:
                    raise ValueError(f"device {dev!r}: entry {e} lacks a positive int {key!r}")
            for key in ("lsh", "faiss", "lsh_topk", "faiss_topk"):
                if e.get(key) is not None and not isinstance(e.get(key), (int, float)):
                    raise ValueError(f"device {dev!r}: entry {e} has a bad {key!r}")
            if not isinstance(e.get("dtype"), str):
                raise ValueError(f"device {dev!r}: entry {e} lacks a dtype")
            ms = e.get("ms")
            if ms is not None and not (
                isinstance(ms, dict)
                and all(
                    isinstance(v, list)
                    and len(v) == len(e.get("measured_n", ()))
                    and all(x is None or (isinstance(x, (int, float)) and x > 0) for x in v)
                    for v in ms.values()
                )
            ):
                raise ValueError(f"device {dev!r}: entry {e} has a bad 'ms' (times per n)")
    return table


def time_at(entry: dict, key: str, n: int) -> float | None:
    """ms of path `key` at n from the entry's measured times, log-log interpolated (the end
    segments extended); None where the entry has fewer than two times for it."""
    ns, ms = entry.get("measured_n") or [], (entry.get("ms") or {}).get(key) or []
    pts = [(math.log(a), math.log(b)) for a, b in zip(ns, ms) if b is not None]
    if len(pts) < 2:
        return None
    x = math.log(max(n, 1))
    i = 1
    while i < len(pts) - 1 and pts[i][0] < x:
        i += 1
    (x0, y0), (x1, y1) = pts[i - 1], pts[i]
    return math.exp(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> dict | None:
    try:
        with open(path) as f:
            table = validate_table(json.load(f))
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        warnings.warn(f"triton_softmax: ignoring crossover table {path}: {exc}", stacklevel=3)
        return None
    table["_path"] = path
    return table


def load_table(path: str | os.PathLike | None = None) -> dict:
    """The tuned table (cache) if present and valid, else the shipped defaults."""
    candidates = [Path(path)] if path is not None else [cache_path(), DEFAULT_TABLE_PATH]
    for p in candidates:
        if p.is_file():
            table = _load(str(p), p.stat().st_mtime)
            if table is not None:
                return table
    return _load(str(DEFAULT_TABLE_PATH), DEFAULT_TABLE_PATH.stat().st_mtime)


def lookup(table: dict, device: str, d: int, N: int, dtype: str) -> tuple[dict | None, str]:
    """The measured entry nearest to (d, N) (log distance), same dtype preferred."""
    spec = table["devices"].get(device)
    if spec is None and device.startswith("cuda"):
        cuda = [k for k in table["devices"] if k.startswith("cuda")]
        spec = table["devices"][cuda[0]] if cuda else None
    if spec is None or not spec["entries"]:
        return None, f"no crossover measured for device {device}"

    def dist(e):
        return (
            abs(math.log(e["d"] / d))
            + abs(math.log(e["N"] / max(N, 1)))
            + (0.0 if e["dtype"] == dtype else 10.0)
        )

    entry = min(spec["entries"], key=dist)
    return entry, spec.get("source", "unknown source")


@dataclass(frozen=True)
class Choice:
    method: str
    reason: str
    inputs: dict = field(default_factory=dict)
    ranked: tuple[str, ...] = ()  # auto, from the table: paths by speed here, "full" last

    def explain(self) -> str:
        seen = ", ".join(f"{k}={v}" for k, v in self.inputs.items())
        return f"method={self.method}: {self.reason} [looked at: {seen}]"


def _full_working_set(n: int, d: int, N: int, elt: int) -> int:
    from .reference.linear_ce import class_chunk

    return n * d * elt + 3 * N * class_chunk(N, n) * 4  # dense dW + logits chunk temporaries


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
    exact: bool = False,
    table: dict | None = None,
    inference: bool = False,
) -> Choice:
    """Resolve `requested` (auto/full/faiss/lsh) into the path that runs, with the reason.

    inference=True (topk): the crossovers of retrieval + exact rerank against the exact
    top-k ("lsh_topk", "faiss_topk" in the table, written by the tune command) are used;
    where a table has none, the training crossover stands in and the reason says so.
    """
    if requested not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {requested!r}")
    dev = torch.device(device)
    dtype_name = str(dtype).replace("torch.", "")
    inputs = dict(
        n=n, d=d, N=batch, dtype=dtype_name, device=dev.type, S=num_candidates, T=num_uniform
    )
    if exact or requested == "full":
        return Choice("full", "exact loss asked for", inputs)
    if requested == "uniform":  # S = {target}: |S| = 1 whatever num_candidates says
        inputs["S"] = 1
        if 1 + num_uniform >= n:
            return Choice("full", f"1 + |T| = {1 + num_uniform} >= n = {n}: exact loss", inputs)
        return Choice(
            "uniform",
            f"asked for uniform sampling: S = {{target}}, T = {num_uniform} classes drawn "
            f"uniformly from the other n - 1, weight (n - 1) / |T|; no index"
            + ("; top-k is exact (no index to retrieve from)" if inference else ""),
            inputs,
        )
    if num_candidates + num_uniform >= n:
        return Choice(
            "full",
            f"|S|+|T| = {num_candidates + num_uniform} >= n = {n}: sampling "
            "saves nothing, so the exact loss is computed",
            inputs,
        )
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

    table = table if table is not None else load_table()
    dclass = device_class(dev)
    entry, source = lookup(table, dclass, d, batch, dtype_name)
    where = table.get("_path", "given table")
    notes = []
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        need = _full_working_set(n, d, batch, torch.empty((), dtype=dtype).element_size())
        if need > free:
            return Choice(
                "lsh",
                f"the full path needs ~{need / 2**30:.1f} GiB, more than the "
                f"{free / 2**30:.1f} GiB free on {dclass}",
                inputs,
                ("lsh", "faiss") if faiss_available() else ("lsh",),
            )
    if entry is None:
        return Choice("full", f"{source}; exact path by default", inputs)
    at = f"(d={entry['d']}, N={entry['N']}, {entry['dtype']}) from {source} [{where}]"
    options = []
    for m in ("lsh", "faiss"):
        key = f"{m}_topk" if inference and f"{m}_topk" in entry else m
        if inference and key == m:
            notes.append(f"no inference crossover measured for {m}: training crossover used")
        if entry.get(key) is None:
            continue
        if m == "faiss" and not faiss_available():
            notes.append(f"faiss unavailable ({FAISS_IMPORT_ERROR})")
            continue
        options.append((m, int(entry[key])))
    over = sorted((x, m) for m, x in options if n >= x)
    note = ("; " + "; ".join(notes)) if notes else ""
    if over:
        # fastest first where the table has the times (a path that crossed early can still
        # be the slower one at this n), else in crossover order
        keys = {m: f"{m}_topk" if inference and f"{m}_topk" in entry else m for _, m in over}
        est = {m: time_at(entry, keys[m], n) for _, m in over}
        timed = all(t is not None for t in est.values())
        if timed:
            over = sorted(over, key=lambda xm: est[xm[1]])
        x, m = over[0]
        ranked = (*(name for _, name in over), "full")
        reason = f"n = {n} >= {m} crossover {x} measured at {at}{note}"
        if len(over) > 1 and timed:
            reason += "; fastest here by the table's times: " + ", ".join(
                f"{name} ~{est[name]:.0f} ms" for _, name in over
            )
        return Choice(m, reason, inputs, ranked)
    if options:
        first = min(x for _, x in options)
        return Choice(
            "full", f"n = {n} < the lowest crossover {first} measured at {at}{note}", inputs
        )
    return Choice(
        "full", f"no sampled path overtook the exact one where measured at {at}{note}", inputs
    )


def choose_by_quality(speed: Choice, masses: dict[str, float], target: float) -> Choice:
    """The first path of speed.ranked (fastest first) whose measured captured mass is >=
    target ("full": exact, mass 1); masses: {method: mean mass on the probe batch} of the
    paths measured (a path missing from it is not chosen). Where none meets the target and
    full is not among the ranked (it does not fit), the path of largest mass, said so."""
    said = [f"{m} {masses[m]:.3f}" for m in speed.ranked if m in masses and m != "full"]
    seen = f"captured mass on the probe batch: {', '.join(said) or 'none measured'}"
    for m in speed.ranked:
        mass = 1.0 if m == "full" else masses.get(m)
        if mass is not None and mass >= target:
            faster = speed.ranked[: speed.ranked.index(m)]
            why = "".join(f"{x} (faster) misses the target {target:.3g}; " for x in faster)
            what = "exact (mass 1)" if m == "full" else f"the fastest with mass >= {target:.3g}"
            reason = f"{why}{m} is {what}; {seen} [speed: {speed.reason}]"
            return Choice(m, reason, speed.inputs, speed.ranked)
    best = max((x for x in speed.ranked if x in masses), key=masses.get, default=speed.method)
    reason = (
        f"no path meets target {target:.3g} and full does not fit: {best} has the largest mass "
        f"({seen}) [speed: {speed.reason}]"
    )
    return Choice(best, reason, speed.inputs, speed.ranked)


def explain(
    n: int,
    d: int,
    batch: int,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    method: str = "auto",
    num_candidates: int = 512,
    num_uniform: int = 512,
    **kw,
) -> str:
    """A human-readable account of what `method` resolves to for these sizes, and why."""
    return choose_method(
        method, n, d, batch, dtype, torch.device(device), num_candidates, num_uniform, **kw
    ).explain()
