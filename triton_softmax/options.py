"""Option objects: frozen dataclasses that validate themselves, one per concern.

Every layer takes these instead of re-plumbing loose keyword arguments, and they are
hashable, so (shape, options) is the dispatcher's cache key. The flat keyword arguments of
SampledSoftmaxLoss and sampled_softmax_cross_entropy are mapped onto them by `from_kwargs`.

  LossOptions      what the loss is: reduction, ignore_index, label smoothing, z-loss, softcap
  SamplingOptions  the estimator: |S|, |T|, candidate scheme, proposal of T, accidental hits
  IndexOptions     the candidate generator: method, LSH / FAISS settings, refresh policy, seed
  DriftOptions     drift checks (exact vs estimated loss) and drift-triggered refreshes
  GradOptions      how gradients are written: sparse rows, deterministic accumulation
  ShardSpec        class sharding over a process group (see distributed.py)
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from . import checks
from .index.generators import DEFAULT_LSH_GENERATOR, check_lsh_generator
from .index.simhash import check_rank
from .samplers import CategoricalSampler, Sampler

SCHEMES = ("per_example", "shared_samples", "batch_union", "hybrid", "bucket_shared")
SAMPLERS = ("auto", "uniform", "log_uniform", "frequency")
BUCKET_IMPLS = ("auto", "gather", "tiles")


# The captured mass at which the lsh / faiss search switches on by default. Until then a
# step is a shared-negative one (S = {target}, T alone), as cheap as the hand-written
# baseline's, which is what an untrained model's flat softmax deserves. Measured (WordNet
# synset, 117,659 classes, faiss, |S| = 64, N = 1,024, Adam, one thread per run, budgets on
# each run's CPU seconds, four runs side by side, Intel Xeon 2.6 GHz, 2026-12-07,
# bench/results/accuracy-wordnet-synset-*-cpu-defaults-synset-a-20261207.json): a shared T of 1,024
# with this gate had P@1 0.355 / 0.942 / 0.950 / 0.984 after 0.5 / 1 / 2 / 4 min, the same
# without it 0.143 / 0.538 / 0.929 / 0.983 (wall-clock budgets, another run), and 0.3 was
# the threshold of the 2026-12-01 records (T of 256, 512, 1,024 all gained alike).
AUTO_SEARCH_MIN_MASS = 0.3
# candidate_scheme "auto": one T of at least this many uniform draws shared by the batch
# (SamplingOptions.resolved has the measurements).
AUTO_SHARED_T = 1024
# of those draws, this share is a head of the most frequent targets scored exactly, the rest
# drawn in proportion to (count + 1) ** 0.75 (SamplingOptions.resolved has the measurements)
AUTO_HEAD_SHARE = 0.25


def check_nonneg_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a float >= 0 (0: off), got {value!r}")
    return float(value)


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)  # normalising a field of a frozen dataclass


@dataclass(frozen=True)
class LossOptions:
    """reduction none/mean/sum; rows with target == ignore_index get zero loss and gradient;
    label_smoothing in [0, 1]; z_loss >= 0 adds z_loss * lse^2 per row; softcap c > 0 caps
    logits to c tanh(z / c); validate=True checks inputs for NaN/inf (reads them: a sync)."""

    reduction: str = "mean"
    ignore_index: int = -100
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    softcap: float = 0.0
    validate: bool = False

    def __post_init__(self) -> None:
        checks.check_reduction(self.reduction)
        # any integer (numpy's too, as torch takes), stored as a Python int
        _set(self, "ignore_index", checks.as_ignore_index(self.ignore_index))
        ls = self.label_smoothing
        if not (isinstance(ls, numbers.Real) and not isinstance(ls, bool) and 0.0 <= ls <= 1.0):
            raise ValueError(f"label_smoothing must be a float in [0, 1], got {ls!r}")
        _set(self, "z_loss", check_nonneg_float("z_loss", self.z_loss))
        _set(self, "softcap", check_nonneg_float("softcap", self.softcap))


@dataclass(frozen=True)
class SamplingOptions:
    """num_candidates |S| (with the target); num_uniform |T|; scheme: auto / per_example /
    shared_samples / batch_union / bucket_shared (auto: see `resolved`); bucket_impl
    (bucket_shared): auto / gather / tiles; sampler: "auto" | "uniform" | "log_uniform" |
    "frequency" | (n,) class weights | a Sampler (a weight tensor is wrapped in a
    CategoricalSampler, so the options stay hashable). "frequency" (the module only): q
    proportional to (count + 1) ** 0.75 of the targets it has trained on (frequency.py);
    "auto": "frequency" under candidate_scheme "auto", else "uniform". num_head (shared
    schemes with a non-uniform q): the num_head classes of largest q are scored exactly for
    every row and T is drawn from q over the rest (samplers.py: a head split)."""

    num_candidates: int = 512
    num_uniform: int = 512
    scheme: str = "auto"
    num_shared: int = 1024
    bucket_impl: str = "auto"
    sampler: str | Sampler = "auto"
    remove_accidental_hits: bool = True
    num_head: int = 0

    def __post_init__(self) -> None:
        checks.check_int_option("num_candidates (|S|)", self.num_candidates, 1)
        checks.check_int_option("num_uniform (|T|)", self.num_uniform, 0)
        checks.check_int_option("num_shared", self.num_shared, 0)
        checks.check_int_option("num_head", self.num_head, 0)
        if self.scheme not in ("auto", *SCHEMES):
            raise ValueError(
                f"candidate_scheme must be 'auto' or one of {SCHEMES}, got {self.scheme!r}"
            )
        if self.bucket_impl not in BUCKET_IMPLS:
            raise ValueError(f"bucket_impl must be one of {BUCKET_IMPLS}, got {self.bucket_impl!r}")
        if isinstance(self.sampler, torch.Tensor):
            _set(self, "sampler", CategoricalSampler(self.sampler))
        elif not isinstance(self.sampler, (str, Sampler)):
            raise ValueError(
                "sampler must be 'uniform', 'log_uniform', a weight tensor or a Sampler, "
                f"got {self.sampler!r}"
            )
        elif isinstance(self.sampler, str) and self.sampler not in SAMPLERS:
            raise ValueError(
                f"sampler must be one of {SAMPLERS}, a weight tensor or a Sampler, "
                f"got {self.sampler!r}"
            )
        if self.num_head and self.scheme in ("per_example", "hybrid", "batch_union"):
            raise ValueError(
                f"num_head scores a head shared by the batch: candidate_scheme "
                f"'shared_samples', 'bucket_shared' or 'auto', got {self.scheme!r}"
            )
        if self.num_head and self.sampler in ("uniform", "log_uniform"):
            raise ValueError(
                "num_head takes the classes of largest q: sampler='frequency' or class "
                f"weights, got {self.sampler!r}"
            )

    def resolved(
        self, loss: LossOptions, shard: ShardSpec | None, n: int | None = None
    ) -> SamplingOptions:
        """scheme "auto" -> "shared_samples" with shared columns sized for coverage: each row
        keeps its own S (exact weights), and the batch shares max(|T|, min(AUTO_SHARED_T,
        n // 8)) columns scored as one dense N x columns product (the n // 8 cap keeps a small
        problem's |S| + columns below n, where the dispatcher would fall back to the exact
        loss). With sampler "auto" (the default) a quarter of them (AUTO_HEAD_SHARE, at most
        n // 8 classes) are a head of the most frequent targets, scored exactly for every
        row, and the rest draws from q proportional to (count + 1) ** 0.75 over the other
        classes (sampler "frequency", frequency.py); an asked sampler keeps every column a
        draw. Sharded modules and softcap, which take the per-example scheme only, get
        "per_example". num_uniform=0 (no T) stays 0. An explicit scheme stays; sampler "auto"
        is "uniform" for it ("frequency" where num_head is asked).

        Judged by quality at fixed training budgets, not by step time (bench.accuracy
        --clock cpu: each run's CPU seconds, four runs side by side, one thread each; Intel
        Xeon 2.6 GHz, 2026-12-07; |S| = 64, N = 1,024, Adam; records
        bench/results/accuracy-*-cpu-*-20261207.json and heldout_trace-*; docs/accuracy.md).
        The shared columns: on WordNet synset (117,659 classes, faiss) a shared T of 1,024
        with the search gate had P@1 0.359 / 0.912 / 0.932 / 0.980 after 0.5 / 1 / 2 / 4 min,
        per-example |T| = 64 (the default before) 0.012 / 0.589 / 0.899 / 0.978, the
        hand-written shared negatives (K = 1,024) 0.389 / 0.897 / 0.899 / 0.929: per step
        the schemes learn alike there, and one dense product is cheaper than gathering
        N x |T| rows. The head and the frequency draws: a uniform shared T makes every row's
        estimate of the mass outside S err the same way, so on a Zipfian task its error does
        not average over the batch (tests/test_shared_t_zipf.py) and held-out perplexity on
        the stdlib next-token task (120,089 classes) swung: traced every 20 steps, faiss with
        1,024 uniform draws rose to 1.89x its running minimum, with the head and frequency
        draws 1.23x (per-example T 1.26x) at the same step cost (cpu-pycode-head). On
        WordNet the two tie: method="auto" P@1 after 0.5 / 1 / 2 / 3 / 4 min, synset 0.231 /
        0.937 / 0.928 / 0.955 / 0.971 with the head against 0.263 / 0.949 / 0.930 / 0.957 /
        0.971 uniform, lemma 0.268 / 0.367 / 0.967 / 0.937 / 0.956 against 0.219 / 0.354 /
        0.940 / 0.907 / 0.953 (cpu-head-wordnet)."""
        plain = self.sampler
        if plain == "auto":  # a head asked of an explicit scheme is taken by frequency
            plain = "frequency" if self.num_head else "uniform"
        if n is not None and 0 < n <= self.num_head:
            raise ValueError(f"num_head must be below n = {n} (a T needs classes to draw)")
        if self.scheme != "auto":
            return dataclasses.replace(self, sampler=plain)
        if shard is not None or loss.softcap:
            return dataclasses.replace(self, scheme="per_example", sampler=plain)
        cap = AUTO_SHARED_T if n is None else min(AUTO_SHARED_T, n // 8)
        # num_uniform=0 asked for no T at all (a softmax over S): it stays 0
        size = max(self.num_uniform, cap) if self.num_uniform else 0
        if self.sampler != "auto" or not size:
            return dataclasses.replace(
                self, scheme="shared_samples", num_uniform=size, sampler=plain
            )
        head = self.num_head or int(size * AUTO_HEAD_SHARE)  # an asked head is kept
        if n is not None and not self.num_head:  # a head is a few classes, whatever |T|
            head = min(head, n // 8)
        if head >= size:
            raise ValueError(f"num_head={head} leaves no T of the shared {size} draws")
        return dataclasses.replace(
            self,
            scheme="shared_samples",
            sampler="frequency",
            num_head=head,
            num_uniform=size - head,
        )

    @property
    def uniform(self) -> bool:
        return isinstance(self.sampler, str) and self.sampler in ("uniform", "auto")

    @property
    def num_shared_columns(self) -> int:
        """Columns of the shared dense product a step scores: the exact head and T."""
        return self.num_head + self.num_uniform


@dataclass(frozen=True)
class IndexOptions:
    """method auto/full/faiss/lsh/uniform (uniform: no index, S = {target}); lsh_bits K
    (None: from n, L, |S|), lsh_tables L; faiss_index auto/flat/ivf/ivfpq with
    faiss_nlist / faiss_nprobe (auto: index.factory.faiss_kind); refresh_every training
    steps; partial_refresh: re-index only rows with a sparse gradient (SimHash tables:
    exactly a full rehash at the same MIPS scale; k-means lists ("clusters"): approximate,
    the rows are re-assigned to the lists' current centroids while a full refresh also moves
    the centroids by warm Lloyd iterations: captured mass 0.428 vs 0.437 after 11 refreshes,
    bench/results/partial-refresh-clusters-cpu-20261207.json); seed: hyperplanes
    and draws; lsh_generator: what the lsh path retrieves S with, "clusters" (k-means
    lists, union reranked by exact logits) | "tables" (LSHIndex, SimHash tables
    ranked by collision count); None: "tables" under bucket_shared, else "clusters";
    target_mass in (0, 1) (sampled paths): at each refresh the captured softmax mass of the
    retrieved S is measured on the last training batch (up to 64 rows) and the clusters /
    FAISS IVF nprobe set to the smallest rung meeting it (quality.py); method="auto" then
    runs the fastest path whose measured mass meets it (None: dispatch.AUTO_TARGET_SHARE =
    0.3 of the mass the exact top-(|S| - 1) classes hold on the same rows);
    search_min_mass m in (0, 1] (lsh / faiss): no search (S = {target}, the uniform T carries
    the estimate) until a refresh measures a captured mass >= m, then the search runs from
    that refresh on (an untrained model's flat softmax: it would cost without capturing),
    and no index is built while the exact top-(|S| - 1) classes hold less than about m / 0.75
    (quality.ceiling_to_build) or, after a build that missed m, while the index kept from it
    captures less than m / 2 (quality.STALE_SHARE);
    "auto" (default): AUTO_SEARCH_MIN_MASS for method "lsh" / "faiss" / "auto" (the sampled
    path auto chooses; not sharded, not bucket_shared), else None (no gate); None: the search
    runs from the first step;
    rerank_copy (lsh_generator "clusters"): True: score the probed lists from a contiguous
    copy of the rows taken at each refresh, as FAISS does (stale between refreshes, one more
    n x d float32), instead of gathering the live rows; False: the live rows; None (default):
    the copy when the weights are on a CPU and it takes at most 4 GiB (gathering the live rows
    there cost 2x the search at n = 1e6), live rows on CUDA; lsh_nprobe (clusters): lists read
    per query (None: 16; target_mass tunes it at each refresh); lsh_rank (lsh_generator
    "tables"): how the union of a query's SimHash buckets is ranked, "count" (collision
    count, kernels/bucket_lookup.py) | "score" (exact logit under the live weights, the
    clusters' tensor-core list tiles on CUDA) | None: "score" on CUDA, "count" elsewhere
    (index/simhash.py default_rank says what was measured)."""

    method: str = "auto"
    lsh_bits: int | None = None
    lsh_tables: int = 8
    faiss_index: str = "auto"
    faiss_nlist: int | None = None
    faiss_nprobe: int = 16
    refresh_every: int = 100
    partial_refresh: bool = False
    seed: int = 0
    lsh_generator: str | None = None
    target_mass: float | None = None
    search_min_mass: float | str | None = "auto"
    rerank_copy: bool | None = None
    lsh_nprobe: int | None = None
    lsh_rank: str | None = None

    def __post_init__(self) -> None:
        check_rank(self.lsh_rank)
        if self.rerank_copy is not None and not isinstance(self.rerank_copy, bool):
            raise ValueError(f"rerank_copy must be True, False or None, got {self.rerank_copy!r}")
        if self.lsh_nprobe is not None:
            checks.check_int_option("lsh_nprobe", self.lsh_nprobe, 1)
        m = self.search_min_mass
        if m is not None and m != "auto":
            if isinstance(m, bool) or not isinstance(m, numbers.Real) or not 0.0 < m <= 1.0:
                raise ValueError(
                    f"search_min_mass must be a float in (0, 1], 'auto' or None, got {m!r}"
                )
            _set(self, "search_min_mass", float(m))
        t = self.target_mass
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0.0 < t < 1.0:
                raise ValueError(f"target_mass must be a float in (0, 1) or None, got {t!r}")
            _set(self, "target_mass", float(t))
        if self.lsh_generator is not None:
            check_lsh_generator(self.lsh_generator)
        checks.check_index_options(
            method=self.method,
            lsh_bits=self.lsh_bits,
            lsh_tables=self.lsh_tables,
            faiss_index=self.faiss_index,
            refresh_every=self.refresh_every,
        )

    def resolved(self, sampling: SamplingOptions, shard: ShardSpec | None) -> IndexOptions:
        """These options with lsh_generator chosen (None -> "tables" for the bucket_shared
        scheme and for a sharded module (its ranks' tables, tested as such), else "clusters")
        and search_min_mass "auto" resolved (see the class docstring)."""
        new = self
        if self.search_min_mass == "auto":
            gate = (
                self.method in ("lsh", "faiss", "auto")
                and shard is None
                and sampling.scheme != "bucket_shared"
            )
            new = dataclasses.replace(new, search_min_mass=AUTO_SEARCH_MIN_MASS if gate else None)
        if self.lsh_generator is not None:
            return new
        tables = sampling.scheme == "bucket_shared" or shard is not None
        gen = "tables" if tables else DEFAULT_LSH_GENERATOR
        return dataclasses.replace(new, lsh_generator=gen)


@dataclass(frozen=True)
class DriftOptions:
    """every: a drift check (exact vs estimated loss on `rows` rows) every that many training
    steps (None: off), reported to `hook`; refresh_drift: rebuild the index when the probe
    rows' drift exceeds it (checked every check_every steps on probe_rows rows)."""

    every: int | None = None
    rows: int = 8
    hook: Callable[[dict], None] | None = None
    refresh_drift: float | None = None
    check_every: int = 10
    probe_rows: int = 1024

    def __post_init__(self) -> None:
        if self.every is not None:
            checks.check_int_option("drift_every", self.every, 1)
        checks.check_int_option("drift_rows", self.rows, 1)
        checks.check_int_option("drift_check_every", self.check_every, 1)
        checks.check_int_option("drift_probe_rows", self.probe_rows, 1)
        if self.refresh_drift is not None and not self.refresh_drift > 0:
            raise ValueError(f"refresh_drift must be a positive float, got {self.refresh_drift!r}")


@dataclass(frozen=True)
class GradOptions:
    """sparse: the weight gradient is a sparse COO tensor of the rows touched (SGD, SparseAdam);
    deterministic: dense dW by sort + segment-reduce instead of atomics (Triton path)."""

    sparse: bool = False
    deterministic: bool = False


@dataclass(frozen=True)
class ShardSpec:
    """Classes sharded over `group` (None: the world; without torch.distributed initialised, one
    shard); bounds: [(lo, hi)] per rank (None: distributed.shard_bounds, sizes within 1)."""

    group: Any = None
    bounds: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        if self.bounds is not None:
            _set(self, "bounds", tuple((int(lo), int(hi)) for lo, hi in self.bounds))


def check_combination(
    loss: LossOptions, sampling: SamplingOptions, index: IndexOptions, grad: GradOptions
) -> None:
    """The rules that span several option objects (one ValueError naming the options)."""
    if sampling.scheme == "bucket_shared" and (index.method != "lsh" or loss.softcap):
        raise ValueError(
            "candidate_scheme='bucket_shared' needs the lsh index (method='lsh') and does "
            "not support softcap yet"
        )
    if sampling.scheme == "bucket_shared" and index.lsh_generator not in (None, "tables"):
        raise ValueError(
            "candidate_scheme='bucket_shared' scores whole SimHash buckets: it needs "
            f"lsh_generator='tables', got {index.lsh_generator!r}"
        )
    if sampling.bucket_impl == "tiles" and (grad.sparse or not sampling.uniform):
        raise ValueError(
            "bucket_impl='tiles' gives dense gradients with a uniform T: it takes neither "
            "sparse_grad=True nor a non-uniform sampler (use bucket_impl='gather')"
        )
    if index.target_mass is not None and index.method in ("full", "uniform"):
        raise ValueError(
            f"target_mass is measured on the retrieved candidates of a sampled path "
            f"(method 'auto', 'lsh' or 'faiss'), not with method={index.method!r}"
        )
    # options of the clusters generator (a module's resolved generator: bucket_shared and
    # sharded modules run the SimHash tables)
    for name, given in (("rerank_copy", index.rerank_copy), ("lsh_nprobe", index.lsh_nprobe)):
        if given not in (None, False) and index.lsh_generator not in (None, "clusters"):
            raise ValueError(
                f"{name} sets the clusters generator's lists, and this module's lsh generator "
                f"is {index.lsh_generator!r} (candidate_scheme='bucket_shared' and sharded "
                "modules use 'tables'); drop it or set lsh_generator='clusters'"
            )
    if index.lsh_rank is not None and index.lsh_generator not in (None, "tables"):
        raise ValueError(
            f"lsh_rank ranks the SimHash tables' buckets, and this module's lsh generator is "
            f"{index.lsh_generator!r}; drop it or set lsh_generator='tables'"
        )
    if index.search_min_mass is not None and index.method not in ("lsh", "faiss", "auto"):
        raise ValueError(
            "search_min_mass switches the search of method 'lsh', 'faiss' or 'auto' (the "
            f"sampled path it chose) on and off, not method={index.method!r}"
        )
    if index.partial_refresh and not grad.sparse:
        raise ValueError(
            "partial_refresh needs sparse_grad=True (it re-hashes the rows that "
            "received a sparse gradient since the last refresh)"
        )


# flat keyword -> (option object, field): the compatibility layer of the old signatures
FLAT_KWARGS: dict[str, tuple[str, str]] = {
    "reduction": ("loss", "reduction"),
    "ignore_index": ("loss", "ignore_index"),
    "label_smoothing": ("loss", "label_smoothing"),
    "z_loss": ("loss", "z_loss"),
    "softcap": ("loss", "softcap"),
    "validate": ("loss", "validate"),
    "num_candidates": ("sampling", "num_candidates"),
    "num_uniform": ("sampling", "num_uniform"),
    "num_shared": ("sampling", "num_shared"),
    "candidate_scheme": ("sampling", "scheme"),
    "scheme": ("sampling", "scheme"),
    "bucket_impl": ("sampling", "bucket_impl"),
    "sampler": ("sampling", "sampler"),
    "num_head": ("sampling", "num_head"),
    "remove_accidental_hits": ("sampling", "remove_accidental_hits"),
    "method": ("index", "method"),
    "lsh_bits": ("index", "lsh_bits"),
    "lsh_tables": ("index", "lsh_tables"),
    "faiss_index": ("index", "faiss_index"),
    "faiss_nlist": ("index", "faiss_nlist"),
    "faiss_nprobe": ("index", "faiss_nprobe"),
    "refresh_every": ("index", "refresh_every"),
    "partial_refresh": ("index", "partial_refresh"),
    "seed": ("index", "seed"),
    "lsh_generator": ("index", "lsh_generator"),
    "target_mass": ("index", "target_mass"),
    "search_min_mass": ("index", "search_min_mass"),
    "rerank_copy": ("index", "rerank_copy"),
    "lsh_nprobe": ("index", "lsh_nprobe"),
    "lsh_rank": ("index", "lsh_rank"),
    "drift_every": ("drift", "every"),
    "drift_rows": ("drift", "rows"),
    "drift_hook": ("drift", "hook"),
    "refresh_drift": ("drift", "refresh_drift"),
    "drift_check_every": ("drift", "check_every"),
    "drift_probe_rows": ("drift", "probe_rows"),
    "sparse_grad": ("grad", "sparse"),
    "deterministic": ("grad", "deterministic"),
    "group": ("shard", "group"),
    "bounds": ("shard", "bounds"),
}
OPTION_TYPES = {
    "loss": LossOptions,
    "sampling": SamplingOptions,
    "index": IndexOptions,
    "drift": DriftOptions,
    "grad": GradOptions,
    "shard": ShardSpec,
}


def from_kwargs(given: dict[str, Any], flat: dict[str, Any], owner: str) -> dict[str, Any]:
    """Merge flat keyword arguments into option objects.

    given: {"loss": LossOptions | None, ...} as passed; flat: the other keyword arguments.
    A flat keyword overrides that field of a given object. Unknown keywords raise TypeError
    naming `owner`, as Python would. Returns {"loss": LossOptions(...), ...} ("shard" is
    None unless a shard spec or group/bounds was given).
    """
    fields: dict[str, dict[str, Any]] = {k: {} for k in OPTION_TYPES}
    for key, value in flat.items():
        if key not in FLAT_KWARGS:
            raise TypeError(f"{owner} got an unexpected keyword argument {key!r}")
        group, field = FLAT_KWARGS[key]
        fields[group][field] = value
    out: dict[str, Any] = {}
    for name, cls in OPTION_TYPES.items():
        obj = given.get(name)
        if obj is not None and not isinstance(obj, cls):
            raise TypeError(f"{name} must be a {cls.__name__}, got {type(obj).__name__}")
        if name == "shard" and obj is None and not fields[name]:
            out[name] = None
        elif fields[name]:
            out[name] = dataclasses.replace(obj if obj is not None else cls(), **fields[name])
        else:
            out[name] = obj if obj is not None else cls()
    return out
