"""pytest-benchmark suite: one training step (forward + backward + SGD) per path and size.

    python -m pytest bench --benchmark-enable --benchmark-only \
        --benchmark-json=bench/results/pytest-benchmark.json

(pyproject's addopts carry --benchmark-disable for the unit tests; --benchmark-enable
overrides it. Add -k "not torch_compile" to leave out the compile, which takes a while.)

Groups are per device, dtype and size, so each group's table compares the paths and peers
on one problem; --benchmark-group-by=param:method groups per path instead. The CPU group
runs everywhere; the CUDA group is skipped without a CUDA device. Runners, inputs and the
index refresh (done before timing, not inside it) are the sweep's: see bench.harness.
"""

from __future__ import annotations

import pytest
import torch

from bench import harness

HAS_CUDA = torch.cuda.is_available()
CPU_SIZES = [(256, 128, 10_000), (256, 128, 100_000)]  # (N, d, n)
CUDA_SIZES = [(8192, 1024, 100_000), (8192, 1024, 1_000_000)]
CPU_METHODS = ["full", "faiss", "lsh", "torch", "torch_compile"]
CUDA_METHODS = CPU_METHODS + ["cce", "liger"]

_problems: dict[tuple, harness.Problem] = {}


def _problem(N: int, d: int, n: int, dtype: torch.dtype, device: str) -> harness.Problem:
    key = (N, d, n, dtype, device)
    if key not in _problems:
        _problems.clear()  # one problem alive at a time
        _problems[key] = harness.Problem(n, d, N, dtype, device, seed=0, need_topk=False)
    return _problems[key]


def _bench_step(benchmark, method: str, problem: harness.Problem, group: str) -> None:
    runner, _, reason = harness.make_runner(method, problem)
    if runner is None:
        pytest.skip(reason)
    if isinstance(runner, harness.OursRunner) and runner.sampled:
        runner.refresh()  # the index build is not part of a step (the sweep times it apart)
    benchmark.group = group
    benchmark.extra_info.update(
        method=method,
        resolved_method=runner.resolved,
        compile_s=runner.compile_s,
        n=problem.n,
        d=problem.d,
        N=problem.N,
        dtype=str(problem.dtype),
        device_name=harness.env_info(problem.device)["device_name"],
    )

    def step():
        runner.step()
        harness.sync(problem.device)

    benchmark.pedantic(step, rounds=5, warmup_rounds=1, iterations=1)


@pytest.mark.parametrize("method", CPU_METHODS)
@pytest.mark.parametrize("size", CPU_SIZES, ids=lambda s: f"N{s[0]}-d{s[1]}-n{s[2]}")
def test_step_cpu(benchmark, method, size):
    N, d, n = size
    problem = _problem(N, d, n, torch.float32, "cpu")
    _bench_step(benchmark, method, problem, f"cpu fp32 N={N} d={d} n={n}")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("method", CUDA_METHODS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("size", CUDA_SIZES, ids=lambda s: f"N{s[0]}-d{s[1]}-n{s[2]}")
def test_step_cuda(benchmark, method, dtype, size):
    N, d, n = size
    problem = _problem(N, d, n, dtype, "cuda")
    name = "bf16" if dtype == torch.bfloat16 else "fp32"
    _bench_step(benchmark, method, problem, f"cuda {name} N={N} d={d} n={n}")
