"""What every benchmark here shares: the machine's description, timers, memory meters, the
problem (weights and inputs), and one runner per path/peer that does a training step.

A *step* is forward + backward + optimizer step (SGD): our paths through SampledSoftmaxLoss
(faiss/lsh with a sparse weight gradient, full with a dense one), the peers as a loss
function over a dense nn.Parameter. The hidden states require grad in every runner, so dh is
computed everywhere (as it would be under a model), but only the class weights are updated.

Timing: on CUDA triton.testing.do_bench (median, min, max after its own warm-up); on CPU
time.perf_counter around each step, after `warmup` steps, median/min/max of `repeats` steps
(fewer when `budget_s` runs out, at least `min_repeats`; the count is recorded).

Peak memory:
  CUDA  torch.cuda.max_memory_allocated over one step (reset before it), which includes the
        state (weights, inputs, index tensors) that is live during the step.
  CPU   torch's CPU allocator reports every allocation and free to the profiler when
        profile_memory=True; the peak of the running sum over one step is the step's
        transient peak ("peak_step_bytes"), and peak_mem_bytes = state_bytes (the runner's
        live tensors, counted by storage) + index_bytes (host memory of a FAISS index, from
        its storage layout) + peak_step_bytes. Allocations outside torch (numpy copies
        for FAISS, FAISS search buffers) are not in it; rss_hwm_delta_bytes (peak RSS over
        the step minus RSS before, via /proc/self/clear_refs) is recorded beside it as a
        cross-check that sees every allocation, but also allocator reuse, so it can read low.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from triton_softmax import SampledSoftmaxLoss, exact_topk, sampled_softmax_cross_entropy
from triton_softmax.cpu_memory import freed_memory_kept, keep_freed_memory

from . import peers

# "<path>_shared": the same path with candidate_scheme="shared_samples" (one T per batch,
# scored as a dense product) instead of the per-example T of the seeds' method.
# lsh_copy / lsh_live: the lsh path with rerank_copy=True / False (lists scored from a copy
# of the rows / the live rows; the default decides by device); lsh_np<p>: lsh_nprobe=p
OUR_PATHS = ("full", "faiss", "lsh", "faiss_shared", "lsh_shared", "uniform", "uniform_shared")
OUR_PATHS += ("lsh_copy", "lsh_live", "faiss_ivf")  # faiss_ivf: IVF-Flat, the default to s9
NPROBE_VARIANT = re.compile(r"lsh_np([1-9][0-9]*)")


def is_our_path(method: str) -> bool:
    """One of OUR_PATHS or an lsh_np<p> variant: a SampledSoftmaxLoss configuration."""
    return method in OUR_PATHS or NPROBE_VARIANT.fullmatch(method) is not None


PEER_PATHS = ("torch", "torch_compile", "cce", "liger")
# the hand-written shared-negative sampled softmax (bench/baselines.py): K = 1024 negatives,
# and K chosen by bench.sweep to match the library's lsh step time in the same run
BASELINE_PATHS = ("shared_neg1024", "shared_neg_matched")
ALL_METHODS = OUR_PATHS + PEER_PATHS + BASELINE_PATHS
BASELINE = "torch"
# Hidden states are planted near their target's weight row (h = PLANT * w_y / |w_y| + noise),
# as in a trained model where the target is among the top logits; see make_problem.
PLANT = 20.0
REPO = Path(__file__).resolve().parents[1]


# ---- the machine ---------------------------------------------------------------------------
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except Exception:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def add_memory_flag(parser) -> None:
    """--keep-freed-memory: call triton_softmax.keep_freed_memory() before anything runs."""
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="keep freed memory in the process (triton_softmax.keep_freed_memory: no page "
        "faults on the step's large CPU buffers; recorded as env.freed_memory_kept)",
    )


def apply_memory_flag(args) -> None:
    if getattr(args, "keep_freed_memory", False) and not keep_freed_memory():
        print("--keep-freed-memory: the C library is not glibc; nothing changed")


def env_info(device: str) -> dict:
    """Device, versions and commit, copied into every record of a run."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception as exc:
        triton_version = f"unavailable ({type(exc).__name__})"
    try:
        import faiss

        faiss_version = faiss.__version__
    except Exception as exc:
        faiss_version = f"unavailable ({type(exc).__name__})"
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return dict(
        device=device,
        device_name=gpu or cpu_model(),
        cpu_model=cpu_model(),
        gpu_name=gpu,
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        # cpu_memory.keep_freed_memory() (or glibc's MALLOC_* settings in the environment)
        freed_memory_kept=freed_memory_kept(),
        malloc_env={k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        hostname=platform.node(),
        python=platform.python_version(),
        torch_version=torch.__version__,
        triton_version=triton_version,
        faiss_version=faiss_version,
        cuda_version=torch.version.cuda,
        git_commit=_git("rev-parse", "HEAD"),
        git_dirty=bool(status) if status is not None else None,
        triton_softmax_impl=os.environ.get("TRITON_SOFTMAX_IMPL", "auto"),
    )


def available_bytes(device: str) -> int:
    """Free memory now: MemAvailable on CPU, cudaMemGetInfo's free on CUDA."""
    if device == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---- timers --------------------------------------------------------------------------------
def write_record(rec: dict, path) -> None:
    """Finish a one-off measurement's JSON record: the 1-minute load average after the run
    (beside the one taken before it), written to `path`, its name printed."""
    rec["load_avg_1min_after"] = os.getloadavg()[0]
    Path(path).write_text(json.dumps(rec, indent=1))
    print(f"wrote {path}")


def save_record(rec: dict, out: Path | None) -> None:
    """Add the triton version (where it imports) and write `rec` to `out` (None: nothing)."""
    try:
        import triton

        rec["triton"] = triton.__version__
    except Exception:  # pragma: no cover
        pass
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rec, indent=1))
        print(f"saved {out}")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_fn(
    fn: Callable[[], object],
    device: str,
    *,
    warmup: int = 1,
    repeats: int = 5,
    min_repeats: int = 1,
    budget_s: float = float("inf"),
) -> dict:
    """median/min/max ms of fn() after warm-up; the timer and the repeat count are recorded."""
    if device == "cuda":
        import triton.testing

        med, lo, hi = triton.testing.do_bench(fn, quantiles=[0.5, 0.0, 1.0])
        return dict(
            median_ms=med, min_ms=lo, max_ms=hi, repeats=None, timer="triton.testing.do_bench"
        )
    for _ in range(warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if spent > budget_s and len(times) >= min_repeats:
            break
    return dict(
        median_ms=1e3 * statistics.median(times),
        min_ms=1e3 * min(times),
        max_ms=1e3 * max(times),
        repeats=len(times),
        timer="time.perf_counter",
    )


# ---- memory --------------------------------------------------------------------------------
def _proc_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


# What the profiler itself prints around every profiled step (Kineto's start/stop trace
# lines, c10's once-per-process note that a block freed in the step was allocated before it):
# chatter about the measurement, not about the code measured.
_PROFILER_CHATTER = re.compile(
    r"SyncActivityProfilerHandler\.cpp:\d+\] profiler_(start|stop)"
    r"|Memory block of unknown size was allocated before the profiling started"
)


@contextlib.contextmanager
def _profiler_chatter_filtered():
    """Run the block with the process's stderr (fd 2, where Kineto and c10 write from C++)
    captured; afterwards write every captured line back except the profiler's chatter."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # read when Kineto first starts: no USDT lines
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): leave it as is
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [
                line
                for line in tmp.read().decode(errors="replace").splitlines(keepends=True)
                if not _PROFILER_CHATTER.search(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _cpu_profiled_peak(fn: Callable[[], object]) -> int:
    """Peak of the running sum of torch CPU allocations (+) and frees (-) during fn().

    Run on one intra-op thread: the profiler records allocations of the calling thread only,
    and the exact path splits its classes over worker threads when several are set (it would
    read as no step memory at all). With T threads it holds T - 1 more chunks of logits
    (about 1 MiB each), which this figure leaves out."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _profiler_chatter_filtered():
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                fn()
    finally:
        torch.set_num_threads(threads)
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (views counted once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor) or t.is_sparse:
            continue
        st = t.untyped_storage()
        key = (st.data_ptr(), t.device.type)
        if key not in seen:
            seen.add(key)
            total += st.nbytes()
    return total


def measure_memory(
    fn: Callable[[], object], device: str, state_bytes: int, index_bytes: int
) -> dict:
    """Peak memory of one call of fn(); see the module docstring for what each field counts."""
    if device == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated()
        return dict(
            peak_mem_bytes=int(peak),
            peak_step_bytes=int(peak - base),
            state_bytes=int(base),
            index_bytes=int(index_bytes),
            mem_method="torch.cuda.max_memory_allocated",
        )
    rec = dict(state_bytes=int(state_bytes), index_bytes=int(index_bytes))
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        rss0 = _proc_status_kb("VmRSS")
        resettable = True
    except OSError:
        rss0, resettable = None, False
    try:
        step_peak = _cpu_profiled_peak(fn)
        rec.update(
            peak_step_bytes=int(step_peak),
            peak_mem_bytes=int(state_bytes + index_bytes + step_peak),
            mem_method="torch.profiler(profile_memory) allocation sum + state",
        )
    except Exception as exc:  # private profiler API moved: say so, keep the RSS figure
        fn()
        rec.update(
            peak_step_bytes=None,
            peak_mem_bytes=None,
            mem_method=f"profiler unavailable ({type(exc).__name__}: {exc})",
        )
    hwm = _proc_status_kb("VmHWM")
    rec["rss_hwm_delta_bytes"] = (
        1024 * (hwm - rss0) if resettable and hwm and rss0 is not None else None
    )
    return rec


# ---- the problem ---------------------------------------------------------------------------
def make_weight(n: int, d: int, dtype: torch.dtype, device: str, seed: int) -> torch.Tensor:
    """(n, d) weights uniform in +-1/sqrt(d) (nn.Linear's init), the same for every runner.

    Drawn in fp32 chunks on the device (so bf16 at n = 1e7 needs no fp32 copy of it all).
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    w = torch.empty(n, d, dtype=dtype, device=device)
    bound = 1.0 / math.sqrt(d)
    rows = max(1, (1 << 24) // d)
    for lo in range(0, n, rows):
        hi = min(n, lo + rows)
        chunk = torch.empty(hi - lo, d, device=device).uniform_(-bound, bound, generator=gen)
        w[lo:hi] = chunk.to(dtype)
    return w


def make_inputs(weight: torch.Tensor, N: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden (N, d) planted near the target rows, target (N,) int64 uniform over classes.

    h_i = PLANT * w_{y_i} / |w_{y_i}| + g_i, g_i ~ N(0, I): the target's logit stands out
    (about PLANT * |w|), as for a trained model, so the recall of the target means something.
    """
    n, d = weight.shape
    gen = torch.Generator(device=weight.device).manual_seed(seed + 1)
    y = torch.randint(0, n, (N,), generator=gen, device=weight.device)
    wy = weight[y].float()
    noise = torch.randn(N, d, generator=gen, device=weight.device)
    h = PLANT * wy / wy.norm(dim=1, keepdim=True).clamp_min(1e-12) + noise
    return h.to(weight.dtype), y


class Problem:
    """One (n, d, N, dtype) problem: inputs, the exact loss and exact top-10 on them."""

    def __init__(
        self, n: int, d: int, N: int, dtype: torch.dtype, device: str, seed: int, need_topk: bool
    ) -> None:
        self.n, self.d, self.N, self.dtype, self.device, self.seed = n, d, N, dtype, device, seed
        w = self.weight()
        self.hidden, self.target = make_inputs(w, N, seed)
        with torch.no_grad():
            self.exact_loss = float(
                sampled_softmax_cross_entropy(self.hidden, w, self.target, method="full")
            )
            self.top10 = exact_topk(self.hidden, w, 10)[1] if need_topk else None
        del w

    def weight(self) -> torch.Tensor:
        """A fresh copy of the initial weights (regenerated: no second copy is kept)."""
        return make_weight(self.n, self.d, self.dtype, self.device, self.seed)


# ---- runners: one training step per path/peer --------------------------------------------
class Runner:
    """Holds one path's state; step() = zero_grad, forward, backward, SGD step -> loss."""

    method: str
    resolved: str
    explain: str | None = None
    compile_s: float | None = None

    def step(self) -> torch.Tensor:
        raise NotImplementedError

    def state_tensors(self) -> list:
        raise NotImplementedError

    def index_bytes(self) -> int:
        return 0


class OursRunner(Runner):
    """SampledSoftmaxLoss(method=...): sparse weight gradient for faiss/lsh, dense for full.

    The index is built by refresh() (timed apart by the caller); during timing the module's
    refresh_every is set out of reach so no step pays for a rebuild.
    """

    def __init__(
        self,
        method: str,
        problem: Problem,
        *,
        num_candidates: int,
        num_uniform: int,
        lr: float,
        seed: int,
    ) -> None:
        self.method = method
        base, _, variant = method.partition("_")
        self.module = SampledSoftmaxLoss(
            weight=nn.Parameter(problem.weight()),
            method=base,
            num_candidates=num_candidates,
            num_uniform=num_uniform,
            sparse_grad=base in ("faiss", "lsh", "uniform"),
            candidate_scheme="shared_samples" if variant == "shared" else "per_example",
            rerank_copy={"copy": True, "live": False}.get(variant),
            lsh_nprobe=int(variant[2:]) if NPROBE_VARIANT.fullmatch(method) else None,
            faiss_index="ivf" if variant == "ivf" else "auto",
            # the step with its search on, as once a model is trained (the default gate
            # would skip the search on these random weights)
            search_min_mass=None,
            seed=seed,
        )
        # path: what the module runs (full/faiss/lsh); resolved: the method name when the
        # dispatcher kept the asked-for path, else the path it fell back to
        self.path = self.module.choice(
            problem.N, problem.dtype, torch.device(problem.device)
        ).method
        self.resolved = method if self.path == base else self.path
        self.explain = self.module.explain(problem.N, problem.dtype)
        self.hidden = problem.hidden.clone().requires_grad_(True)
        self.target = problem.target
        self.opt = torch.optim.SGD(self.module.parameters(), lr=lr)

    @property
    def sampled(self) -> bool:
        return self.path in ("faiss", "lsh")

    def refresh(self) -> None:
        self.module.refresh(self.path)
        self.module.refresh_every = 1 << 62

    def step(self) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        self.hidden.grad = None
        loss = self.module(self.hidden, self.target)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def state_tensors(self) -> list:
        idx = self.module.index
        extra = []
        if idx is not None:
            keys = ("hyperplanes", "sorted_ids", "offsets")  # SimHash tables
            keys += (
                "centroids",
                "route",
                "order",
                "assign",
                "rows_copy",
                "bias_copy",
                "rows_copy_t",
            )  # lists
            extra = [getattr(idx, k, None) for k in keys]
        return [self.module.weight, self.hidden, self.target, *extra]

    def index_bytes(self) -> int:
        """Host bytes of a FAISS index (vectors + ids + centroids), from its storage layout."""
        idx = self.module.index
        if self.path != "faiss" or idx is None or getattr(idx, "index", None) is None:
            return 0
        import faiss

        index = idx.index
        if getattr(idx, "on_gpu", False):
            return 0  # faiss-gpu memory is outside torch's allocator: not counted here
        try:
            ivf = faiss.extract_index_ivf(index)
            return int(ivf.ntotal * (ivf.code_size + 8) + ivf.nlist * ivf.d * 4)
        except Exception:
            return int(index.ntotal * index.d * 4)


class PeerRunner(Runner):
    """A loss function over a dense nn.Parameter (plain PyTorch, torch.compile, CCE, Liger)."""

    def __init__(
        self,
        method: str,
        loss_fn: peers.LossFn,
        problem: Problem,
        *,
        lr: float,
        compile_loss: bool = False,
    ) -> None:
        self.method = self.resolved = method
        self.weight = nn.Parameter(problem.weight())
        self.hidden = problem.hidden.clone().requires_grad_(True)
        self.target = problem.target
        self.opt = torch.optim.SGD([self.weight], lr=lr)
        self.loss_fn = loss_fn
        if compile_loss:
            # One compile per shape: a fresh dynamo cache, static shapes. The first step
            # traces and compiles forward and backward; its wall time is compile_s.
            torch._dynamo.reset()
            self.loss_fn = torch.compile(loss_fn, dynamic=False)
            t0 = time.perf_counter()
            self.first_loss = self.step()
            sync(problem.device)
            self.compile_s = time.perf_counter() - t0

    def step(self) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        self.hidden.grad = None
        loss = self.loss_fn(self.hidden, self.weight, self.target)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def state_tensors(self) -> list:
        return [self.weight, self.hidden, self.target]


def make_runner(
    method: str,
    problem: Problem,
    *,
    num_candidates: int = 512,
    num_uniform: int = 512,
    lr: float = 0.1,
    seed: int = 0,
    num_negatives: int | None = None,
):
    """(runner, None, None), or (None, "skipped", reason) for a peer that cannot run here.

    num_negatives: K of the shared-negative baselines (default 1024, at most n - 1)."""
    if is_our_path(method):
        return (
            OursRunner(
                method,
                problem,
                num_candidates=num_candidates,
                num_uniform=num_uniform,
                lr=lr,
                seed=seed,
            ),
            None,
            None,
        )
    if method in BASELINE_PATHS:
        from .baselines import shared_negative_loss

        K = min(num_negatives or 1024, problem.n - 1)
        gen = torch.Generator().manual_seed(seed)

        def loss_fn(h, w, y):
            return shared_negative_loss(h, w, y, K, gen)

        runner = PeerRunner(method, loss_fn, problem, lr=lr)
        runner.num_negatives = K
        return runner, None, None
    if method == "torch":
        return PeerRunner(method, peers.plain_torch_loss, problem, lr=lr), None, None
    if method == "torch_compile":
        return (
            PeerRunner(method, peers.plain_torch_loss, problem, lr=lr, compile_loss=True),
            None,
            None,
        )
    fn, reason = peers.load_peer(method, problem.device)
    if fn is None:
        return None, "skipped", reason
    return PeerRunner(method, fn, problem, lr=lr), None, None


def estimate_bytes(
    method: str,
    n: int,
    d: int,
    N: int,
    elt: int,
    num_candidates: int,
    num_uniform: int,
    lsh_tables: int = 8,
) -> int:
    """A generous estimate of a step's peak memory, used only to skip what cannot fit.

    W and its gradient (dense paths), the (N, n) logits and two same-sized temporaries
    (plain/compiled PyTorch), the FAISS index copy of W, the LSH build's sort buffers.
    """
    w = n * d * elt
    M = num_candidates + num_uniform + 1
    sampled_tmp = 3 * N * M * d * 4
    if method in ("torch", "torch_compile"):
        return 2 * w + 3 * N * n * max(elt, 4)
    if method in ("cce", "liger", "full"):
        return 2 * w + 64 * N * 1024 * 4 + n * 4 * 2
    if method.startswith("faiss"):
        return w + n * d * 4 + n * 8 + sampled_tmp
    if method.startswith("lsh"):
        return w + 6 * lsh_tables * n * 8 + sampled_tmp
    return 2 * w
