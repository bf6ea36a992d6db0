"""The exact path (method="full") against plain PyTorch on a CPU, before and after a change.

    python -m bench.exact_cpu                          # N 256, d 128, n 1e5 1e6, + tiny Llama
    python -m bench.exact_cpu --n 1e5 --repeats 5 --no-hf
    python -m bench.exact_cpu --before b4ee5ee --out bench/results/exact_cpu-<date>.json

One process, one problem at a time, the methods interleaved step by step (the machine is
shared: a load change hits every method alike), median of `repeats` time.perf_counter steps:

  full         this checkout's SampledSoftmaxLoss(method="full"): forward + backward + SGD
  full_before  the same at git revision --before (its triton_softmax package, extracted with
               `git archive` and imported under another name)
  torch        F.cross_entropy(h @ W.T, y), the plain PyTorch every user has
  torch_compile  the same under torch.compile

as bench.sweep measures a step (bench.harness runners: dense nn.Parameter, hidden requires
grad, SGD), with its peak memory (harness.measure_memory: torch's CPU allocations over one
step + the runner's state; measured on one thread, see one_thread_memory). With --hf, the
tiny Llama of examples/hf_causal_lm.py (vocab 16,384, d 64, 2 layers, batch 16 x 32 tokens,
AdamW, one thread as the README's record): unpatched, patched exact before and after, ms
per step and peak memory. Ratios are time of torch (or unpatched) / time of the method: > 1
is faster than the baseline.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from . import harness, peers

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"


def load_package_at(rev: str, name: str = "triton_softmax_before"):
    """triton_softmax as of git revision `rev`, imported as the package `name`."""
    blob = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "triton_softmax"], capture_output=True, check=True
    ).stdout
    dest = Path(tempfile.mkdtemp(prefix="exact_cpu_"))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    init = dest / "triton_softmax" / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class FullRunner(harness.OursRunner):
    """SampledSoftmaxLoss(method="full") of package `pkg` (this checkout's or an older one);
    step() and state_tensors() are OursRunner's (no index: weight, hidden, target)."""

    def __init__(self, pkg, problem: harness.Problem, lr: float) -> None:
        self.method = self.resolved = self.path = "full"
        self.module = pkg.SampledSoftmaxLoss(weight=nn.Parameter(problem.weight()), method="full")
        self.hidden = problem.hidden.clone().requires_grad_(True)
        self.target = problem.target
        self.opt = torch.optim.SGD(self.module.parameters(), lr=lr)


def interleaved(steps: dict, repeats: int, warmup: int) -> dict:
    """{name: median/min/max ms}: every step fn run once per round, rounds in a loop."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in steps}
    for _ in range(repeats):
        for k, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {
        k: dict(
            median_ms=1e3 * statistics.median(v),
            min_ms=1e3 * min(v),
            max_ms=1e3 * max(v),
            repeats=len(v),
        )
        for k, v in times.items()
    }


def one_thread_memory(runner, workers: bool, problem: harness.Problem) -> dict:
    """harness.measure_memory of one step on one intra-op thread, plus for this checkout's
    full path the temporaries of its other class-part workers.

    torch's profiler loses the allocations of the worker threads (with 2 threads it
    reported 0 bytes for the whole step), so the step is measured on one thread, where the
    twin runs its single part inline; each further worker holds what that part held beside
    dW (its chunk's logits and temporaries, its dh): measured here as peak_step - dW."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner.step()
        m = harness.measure_memory(
            runner.step, "cpu", harness.storage_bytes(runner.state_tensors()), 0
        )
    finally:
        torch.set_num_threads(threads)
    m["mem_threads"] = 1
    if workers:
        dW = problem.n * problem.d * 4
        part = max(0, m["peak_step_bytes"] - dW)
        extra = (threads - 1) * part
        m.update(
            worker_bytes=part,
            workers=threads,
            peak_step_bytes=m["peak_step_bytes"] + extra,
            peak_mem_bytes=m["peak_mem_bytes"] + extra,
        )
    return m


def linear_problem(n: int, args, before) -> dict:
    import triton_softmax

    problem = harness.Problem(n, args.d, args.N, torch.float32, "cpu", args.seed, False)
    runners = {"full": FullRunner(triton_softmax, problem, args.lr)}
    if before is not None:
        runners["full_before"] = FullRunner(before, problem, args.lr)
    runners["torch"] = harness.PeerRunner("torch", peers.plain_torch_loss, problem, lr=args.lr)
    if not args.no_compile:
        runners["torch_compile"] = harness.PeerRunner(
            "torch_compile", peers.plain_torch_loss, problem, lr=args.lr, compile_loss=True
        )
    first = {k: float(r.step()) for k, r in runners.items()}
    load = os.getloadavg()
    times = interleaved({k: r.step for k, r in runners.items()}, args.repeats, args.warmup)
    mem = {k: one_thread_memory(r, k == "full", problem) for k, r in runners.items()}
    out = dict(n=n, d=args.d, N=args.N, dtype="fp32", exact_loss=problem.exact_loss, methods={})
    base_ms, base_mem = times["torch"]["median_ms"], mem["torch"]["peak_mem_bytes"]
    for k in runners:
        out["methods"][k] = dict(
            **times[k],
            **mem[k],
            first_loss=first[k],
            speed_vs_torch=base_ms / times[k]["median_ms"],
            peak_mem_vs_torch=mem[k]["peak_mem_bytes"] / base_mem,
        )
    out["load_avg_before"], out["load_avg_after"] = load, os.getloadavg()
    return out


def hf_problem(args, before) -> dict:
    """The tiny Llama of examples/hf_causal_lm.py: unpatched vs patched exact."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from triton_softmax.integrations import hf as hf_now

    threads = torch.get_num_threads()
    torch.set_num_threads(args.hf_threads)
    g = torch.Generator().manual_seed(args.seed)
    vocab, T, B = args.hf_vocab, 32, 16
    batches = [torch.randint(0, vocab, (B, T), generator=g) for _ in range(4)]

    def model_for(patcher):
        torch.manual_seed(args.seed)
        cfg = LlamaConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=T,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(cfg)
        if patcher is not None:
            patcher.patch(model)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        state = {"i": 0}

        def step():
            ids = batches[state["i"] % len(batches)]
            state["i"] += 1
            loss = model(input_ids=ids, labels=ids).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        return model, step

    models = {"unpatched": model_for(None), "patched": model_for(hf_now)}
    if before is not None:
        hf_before = importlib.import_module(before.__name__ + ".integrations.hf")
        models["patched_before"] = model_for(hf_before)
    # the same initial weights and batch: the first losses agree
    first = {k: float(step()) for k, (_, step) in models.items()}
    load = os.getloadavg()
    times = interleaved({k: s for k, (_, s) in models.items()}, args.hf_repeats, args.warmup)
    mem = {}
    for k, (model, step) in models.items():
        state = [p for p in model.parameters()] + [t for t in batches]
        mem[k] = harness.measure_memory(step, "cpu", harness.storage_bytes(state), 0)
    torch.set_num_threads(threads)
    base_ms = times["unpatched"]["median_ms"]
    base_step = mem["unpatched"]["peak_step_bytes"]
    out = dict(
        model="LlamaForCausalLM(vocab 16384, hidden 64, 2 layers, tied), batch 16 x 32, AdamW",
        vocab=vocab,
        threads=args.hf_threads,
        methods={},
    )
    for k in models:
        out["methods"][k] = dict(
            **times[k],
            **mem[k],
            first_loss=first[k],
            speed_vs_unpatched=base_ms / times[k]["median_ms"],
            peak_step_vs_unpatched=mem[k]["peak_step_bytes"] / base_step,
        )
    out["load_avg_before"], out["load_avg_after"] = load, os.getloadavg()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=float, nargs="*", default=[1e5, 1e6], help="none: skip")
    p.add_argument("--N", type=int, default=256)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--before", default="b4ee5ee", help="git revision to compare ('' for none)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--no-hf", action="store_true", help="skip the tiny Llama")
    p.add_argument("--hf-vocab", type=int, default=16384)
    p.add_argument("--hf-threads", type=int, default=1)
    p.add_argument("--hf-repeats", type=int, default=15)
    p.add_argument("--out", default=None, help="JSON record (default bench/results/...)")
    args = p.parse_args(argv)
    before = load_package_at(args.before) if args.before else None
    env = harness.env_info("cpu")
    rec = dict(
        kind="exact_cpu",
        date=harness.now_iso(),
        env=env,
        before=args.before or None,
        argv=sys.argv[1:] if argv is None else list(argv),
        problems=[],
        hf=None,
    )
    # the tiny Llama first: after the 1 GiB steps at n = 1e6 its step times were less stable
    if not args.no_hf:
        r = rec["hf"] = hf_problem(args, before)
        for k, m in r["methods"].items():
            print(
                f"tiny Llama {k:15s} {m['median_ms']:8.1f} ms/step  x unpatched "
                f"{m['speed_vs_unpatched']:5.2f}  step peak "
                f"{m['peak_step_bytes'] / 2**20:6.1f} MiB ({m['peak_step_vs_unpatched']:.2f})"
            )
    for n in args.n:
        r = linear_problem(int(n), args, before)
        rec["problems"].append(r)
        for k, m in r["methods"].items():
            print(
                f"n={r['n']:>8} {k:14s} {m['median_ms']:9.1f} ms  x torch "
                f"{m['speed_vs_torch']:5.2f}  peak {m['peak_mem_bytes'] / 2**20:8.0f} MiB "
                f"({m['peak_mem_vs_torch']:.2f} of torch's)"
            )
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else RESULTS_DIR / f"exact_cpu-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1))
    print(f"record: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
