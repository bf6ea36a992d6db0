"""FAISS index lifecycle: build over the class weights, search top-k by inner product.

Uses a GPU index when faiss-gpu imports and the weights are on CUDA (tensors passed to faiss
directly through faiss.contrib.torch_utils, no host copy); otherwise faiss-cpu, with a copy of
the weights to host memory at build time and of the queries at search time (a host sync on
CUDA: the FAISS poster's "CPU<->GPU conversion" open problem, and the reason the lsh path
exists). With a bias, rows are [w_j, b_j] and queries [h, 1], so the inner product is the logit.

Index kinds: "flat" (exact inner product), "ivf" (IVF-Flat with inner-product metric,
nlist coarse centroids trained by k-means on the rows, nprobe lists read per query) and
"ivfpq" (the same lists holding 4-bit product-quantized residuals, two columns per
sub-quantizer, scored by FAISS's fast-scan kernels: IndexIVFPQFastScan). ivfpq ranks by
approximate inner products; the loss scores the ids it returns with exact logits anyway, and
reading 32 bytes of codes per row instead of 512 makes its search about 7x faster than
IVF-Flat at the same nprobe (16) on a CPU, at nearly the same quality on a trained model
(WordNet synset snapshot, one thread: 32 vs 230 ms per 1,024 queries, recall of the exact
top-32 0.250 vs 0.253; bench/results/candidates-synset-20261201-ivfpq.json).
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import torch

from .. import nonfinite as _nf
from ..checks import FAISS_INDEX_KINDS, check_int_option
from .base import Snapshot
from .rerank import check_rows

try:  # faiss is optional: the faiss path is unavailable without it
    import faiss

    FAISS_IMPORT_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - depends on the environment
    faiss = None
    FAISS_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

INDEX_KINDS = FAISS_INDEX_KINDS
# ivfpq below this many rows builds the flat index: 16 codes per sub-quantizer want 39 points
# each (FAISS's k-means minimum) to train
PQ_MIN_ROWS = 16 * 39
IVF_KINDS = ("ivf", "ivfpq")


def built_kind(kind: str, n: int) -> str:
    """The index a build over n rows makes for `kind`: ivfpq over fewer than PQ_MIN_ROWS rows,
    and any kind over no rows (every class masked), is the exact flat index."""
    return "flat" if n == 0 or (kind == "ivfpq" and n < PQ_MIN_ROWS) else kind


def faiss_available() -> bool:
    return faiss is not None


def faiss_gpu_available() -> bool:
    return faiss is not None and hasattr(faiss, "StandardGpuResources")


def default_nlist(n: int) -> int:
    """About sqrt(n) lists, and at least 39 rows per list (FAISS's training minimum)."""
    return int(max(1, min(n // 39, round(math.sqrt(n)))))


# k-means for IVF is the refresh's dominant cost: a few iterations on a subsample of the rows
# place the coarse centroids well enough for inner-product search over slowly moving weights.
KMEANS_ITERATIONS = 10
KMEANS_POINTS_PER_CENTROID = 64


def _augment(x: torch.Tensor, col: torch.Tensor | float | None) -> torch.Tensor:
    x = x.detach().float()
    if col is None:
        return x.contiguous()
    if not isinstance(col, torch.Tensor):
        col = torch.full((x.shape[0],), float(col), device=x.device)
    return torch.cat([x, col.detach().float().unsqueeze(1)], dim=1).contiguous()


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    """A zero column when the width is odd (ivfpq's sub-quantizers take two columns each)."""
    if x.shape[1] % 2 == 0:
        return x
    return torch.nn.functional.pad(x, (0, 1)).contiguous()


def _follow_torch_threads() -> None:
    """FAISS's OpenMP pool follows torch.get_num_threads() (set before every build and
    search): torch.set_num_threads(k) is the one knob for both."""
    faiss.omp_set_num_threads(torch.get_num_threads())


class FaissIndex(Snapshot):
    """Top-k inner-product search over class rows with FAISS.

    kind: "flat", "ivf" or "ivfpq" (ivf lists of 4-bit PQ codes, fast-scan; approximate
    ranking); nlist (ivf, default default_nlist(n): about sqrt(n), at least 39
    rows per list); nprobe (ivf, default 16); use_gpu: None = GPU index when faiss-gpu
    imports and weights are on CUDA. FAISS's CPU threads follow torch.get_num_threads().
    Classes that cannot be ranked are left out of the index: a class masked by a -inf bias
    never enters S, and the first class with a NaN/inf row (or NaN/+inf bias) is added to
    every search instead (nonfinite.py). A query whose probed lists hold fewer than k
    indexed classes reads every list, so a search returns k classes whenever the index
    holds k.
    """

    def __init__(
        self,
        kind: str = "flat",
        nlist: int | None = None,
        nprobe: int = 16,
        use_gpu: bool | None = None,
        seed: int = 0,
    ) -> None:
        if faiss is None:
            raise ImportError(
                "the faiss path needs faiss (pip install faiss-cpu, or faiss-gpu): "
                f"{FAISS_IMPORT_ERROR}"
            )
        if kind not in INDEX_KINDS:
            raise ValueError(f"faiss index kind must be one of {INDEX_KINDS}, got {kind!r}")
        if nlist is not None:
            check_int_option("faiss_nlist", nlist, 1)
        check_int_option("faiss_nprobe", nprobe, 1)
        self.kind, self.nlist, self.nprobe, self.use_gpu, self.seed = (
            kind,
            nlist,
            nprobe,
            use_gpu,
            seed,
        )
        self.index = None
        self.dim: int | None = None  # d of the rows at the last build
        self.built_kind = kind  # what the last build made (ivfpq over few rows: flat)
        self.has_bias = False
        self.n = 0
        self.on_gpu = False
        self.any_nonfinite: torch.Tensor | None = None
        self.first_nonfinite: torch.Tensor | None = None
        self.class_ids: torch.Tensor | None = None
        self.num_indexed = 0  # classes in the index: n less the masked and non-finite ones
        self.num_excluded = 0

    @property
    def built(self) -> bool:
        return self.index is not None

    def build(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> FaissIndex:
        _follow_torch_threads()
        weight = weight.detach()
        bias = bias.detach() if bias is not None else None
        num_classes, self.dim = weight.shape
        # a class with a non-finite row can never be ranked: it is left out (and the first
        # NaN/+inf one goes into every search, nonfinite.py); a -inf bias only masks a class,
        # which is left out too, so a padded vocabulary never spends a slot of S on it
        self.any_nonfinite, self.first_nonfinite = _nf.nonfinite_class(weight, bias)
        ok = check_rows(weight, bias, validate=False)
        self.class_ids = None  # index position -> class id, where some classes are left out
        if not bool(ok.all()):  # one host read per build
            self.class_ids = ok.nonzero().flatten()
            weight = weight[self.class_ids]
            bias = bias[self.class_ids] if bias is not None else None
        rows = _augment(weight, bias)
        n, dim = rows.shape
        kind = built_kind(self.kind, n)  # fewer rows than 4-bit PQ training wants: flat
        # ivfpq stays on the host: FAISS's GPU IVF-PQ has no fast-scan layout to copy into
        self.on_gpu = bool(
            (self.use_gpu or self.use_gpu is None)
            and weight.is_cuda
            and faiss_gpu_available()
            and kind != "ivfpq"
        )
        if kind == "ivfpq":
            rows = _pad_even(rows)
            dim = rows.shape[1]
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        else:
            nlist = min(self.nlist or default_nlist(n), n)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(
                    faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT
                )
            else:
                index = faiss.IndexIVFPQFastScan(
                    faiss.IndexFlatIP(dim), dim, nlist, dim // 2, 4, faiss.METRIC_INNER_PRODUCT
                )
                # codes of the residual to the list centroid: finer than codes of the row
                index.by_residual = True
            index.cp.seed = self.seed
            index.cp.niter = KMEANS_ITERATIONS
            index.cp.max_points_per_centroid = KMEANS_POINTS_PER_CENTROID
            index.cp.min_points_per_centroid = 1
            index.nprobe = min(self.nprobe, nlist)
        if self.on_gpu:  # pragma: no cover - needs faiss-gpu
            importlib.import_module("faiss.contrib.torch_utils")  # faiss takes torch tensors

            self._res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._res, rows.device.index or 0, index)
            if kind in IVF_KINDS:
                index.train(rows)
            index.add(rows)
        else:
            host = rows.cpu().numpy()
            if kind in IVF_KINDS:
                index.train(host)
            index.add(host)
        self.index, self.has_bias, self.built_kind = index, bias is not None, kind
        self.n, self.num_indexed = num_classes, n
        self.num_excluded = num_classes - n  # explain() reports them
        return self

    def _search_rows(self, queries, k: int) -> torch.Tensor:
        """(N, k) index positions (int64, -1 where fewer), on the host or FAISS's GPU."""
        if self.on_gpu:  # pragma: no cover - needs faiss-gpu
            return self.index.search(queries, k)[1].long()
        _, pos = self.index.search(np.ascontiguousarray(queries.cpu().numpy()), k)
        return torch.from_numpy(pos)

    @property
    def tunable(self) -> bool:
        """An IVF index on the host: its nprobe can be set between searches (target_mass)."""
        return self.built_kind in IVF_KINDS and self.index is not None and not self.on_gpu

    def set_nprobe(self, nprobe: int) -> None:
        """Lists read per query from now on (IVF on the host; kept for the next build)."""
        check_int_option("faiss_nprobe", nprobe, 1)
        self.nprobe = nprobe
        if self.tunable:
            self.index.nprobe = min(nprobe, self.index.nlist)

    def update_rows(
        self, weight: torch.Tensor, bias: torch.Tensor | None, rows: torch.Tensor
    ) -> bool:
        """No in-place update (IVF lists would need re-assignment): the caller rebuilds."""
        return False

    def union(self, hidden: torch.Tensor) -> torch.Tensor:
        """Not defined for FAISS (no buckets to take the union of): the bucket-shared scheme
        needs the SimHash index."""
        raise NotImplementedError(
            "FaissIndex has no bucket union: candidate_scheme='bucket_shared' needs method='lsh'"
        )

    def state_dict(self) -> dict:
        """Settings and seed: the index is rebuilt from the loaded weights."""
        return dict(kind=self.kind, nlist=self.nlist, nprobe=self.nprobe, seed=self.seed)

    def snapshot(self) -> dict:
        """Snapshot.snapshot, with the FAISS index serialized (a uint8 tensor: on the host,
        from a GPU index's host copy). It holds the indexed rows (flat, ivf) or their codes
        (ivfpq) as the last refresh took them: a checkpoint grows by about that much."""
        state = super().snapshot()
        index = state.pop("index")
        if index is not None:
            host = faiss.index_gpu_to_cpu(index) if self.on_gpu else index
            state["serialized"] = torch.from_numpy(faiss.serialize_index(host).copy())
        return state

    def restore(self, state: dict, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        state = dict(state)
        serialized = state.pop("serialized", None)
        super().restore(state, weight, bias)
        self.index = None
        if serialized is not None:
            self.index = faiss.deserialize_index(serialized.cpu().numpy())
            if self.on_gpu:  # pragma: no cover - needs faiss-gpu
                self._res = faiss.StandardGpuResources()
                self.index = faiss.index_cpu_to_gpu(self._res, weight.device.index or 0, self.index)

    def search(self, hidden: torch.Tensor, k: int) -> torch.Tensor:
        """(N, k) int64 class ids by descending inner product, -1 where fewer than k found
        ((N, 1) for k = 0: S = the target alone, and the slot a non-finite class takes)."""
        if self.index is None:
            raise RuntimeError("FaissIndex.search before build(): call build(weight, bias) first")
        _follow_torch_threads()
        queries = _augment(hidden, 1.0 if self.has_bias else None)
        if self.built_kind == "ivfpq":
            queries = _pad_even(queries)
        k_eff = min(k, self.num_indexed)
        if queries.shape[0] == 0 or k_eff == 0:  # faiss asserts k > 0
            ids = torch.full((queries.shape[0], k), -1, dtype=torch.int64, device=hidden.device)
            return _nf.add_nonfinite_class(ids, self.any_nonfinite, self.first_nonfinite)
        pos = self._search_rows(queries, k_eff)
        short = (pos < 0).any(dim=1)  # on the host for faiss-cpu; one read per search on faiss-gpu
        if self.built_kind in IVF_KINDS and bool(short.any()):
            # the probed lists held fewer than k rows: those queries read every list, so S
            # always holds k classes when the index does (never a silently smaller S)
            rows = short.nonzero().flatten()
            nprobe = self.index.nprobe
            self.index.nprobe = self.index.nlist
            try:
                again = self._search_rows(queries[rows.to(queries.device)], k_eff)
                pos[rows.to(pos.device)] = again
            finally:
                self.index.nprobe = nprobe
        ids = pos.to(hidden.device)
        if self.class_ids is not None:  # positions among the indexed rows -> class ids
            ids = torch.where(ids >= 0, self.class_ids.to(ids.device)[ids.clamp_min(0)], ids)
        if k_eff < k:
            ids = torch.cat([ids, ids.new_full((ids.shape[0], k - k_eff), -1)], dim=1)
        return _nf.add_nonfinite_class(ids, self.any_nonfinite, self.first_nonfinite)
