"""Held-out perplexity every few steps: does it rise while a run trains?

    python3 -m bench.heldout_trace --steps 800 --every 20 [bench.accuracy options]

bench.accuracy evaluates at a few budgets; a rise that lasts a few hundred steps can fall
between two of them. This trains as bench.accuracy does (same data order, model, optimizers,
schedule, seed) for --steps steps and evaluates the exact held-out NLL over all classes every
--every steps (bench.accuracy.evaluate_nll, the same held-out sample). One JSON record to
bench/results/heldout_trace-<task>-<label>-<session>.json: per point the step, the training
CPU seconds (evaluation excluded), the training loss, held-out perplexity and the search
gate's state.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import sys
import time

import torch

from bench import accuracy

FROM_STEP = 200  # before it, every run is still falling from an untrained model's 10^5


def rise(points: list[dict], from_step: int = FROM_STEP) -> tuple[float, int | None, list]:
    """(worst perplexity / running minimum from from_step, its step, the ratio per point)."""
    best, worst, at, ratios = float("inf"), 1.0, None, []
    for p in points:
        if p["step"] < from_step:
            continue
        best = min(best, p["heldout_ppl"])
        ratio = p["heldout_ppl"] / best
        ratios.append((p["step"], ratio))
        if ratio > worst:
            worst, at = ratio, p["step"]
    return worst, at, ratios


def main(argv: list[str] | None = None) -> dict:
    argv = list(argv if argv is not None else sys.argv[1:])
    steps, every = 800, 20
    for flag in ("--steps", "--every"):
        if flag in argv:
            i = argv.index(flag)
            value = int(argv[i + 1])
            del argv[i : i + 2]
            steps, every = (value, every) if flag == "--steps" else (steps, value)
    args = accuracy.build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data, info = accuracy.load_data(args)
    if data.kind != "context":
        raise SystemExit("heldout_trace: a task with held-out perplexity (--task pycode)")
    method, refresh = accuracy.parse_method(args.methods, args.refresh_every)
    torch.manual_seed(args.seed)  # as bench.accuracy.run_one, so the runs start alike
    model = accuracy.Model(data, method, refresh, args)
    opts = model.optimizers(args.lr, args.table_lr)
    per_epoch = math.ceil(data.num_train / args.batch_size)
    scheds = [accuracy.lr_schedule(o, args.lr_schedule, args.epochs * per_epoch) for o in opts]
    held_gen = torch.Generator().manual_seed(args.seed + 3)
    held = torch.randperm(data.num_heldout(), generator=held_gen)[: args.eval_examples]
    held = held.sort().values
    points, cpu = [], 0.0
    for s in range(steps):
        epoch, j = divmod(s, per_epoch)
        if j == 0:
            gen = torch.Generator().manual_seed(args.seed * 1000 + epoch)
            order = torch.randperm(data.num_train, generator=gen)
        idx = order[j * args.batch_size : (j + 1) * args.batch_size]
        c0 = time.process_time()
        lv = accuracy.train_step(model, opts, scheds, idx, data)
        cpu += time.process_time() - c0
        if (s + 1) % every == 0:
            ev = accuracy.evaluate_nll(model, data, held)
            st = model.output.stats() if hasattr(model.output, "stats") else {}
            points.append(dict(step=s + 1, train_cpu_s=cpu, loss=lv, heldout_ppl=ev["ppl"],
                               heldout_p1=ev["p1"], search_on=st.get("search_on")))  # fmt: skip
            if not args.no_progress:
                print(f"step {s + 1}: loss {lv:.3f}, held-out perplexity {ev['ppl']:.1f}",
                      file=sys.stderr)  # fmt: skip
    name = f"{method}@{refresh}" if method in ("faiss", "lsh") and refresh != 100 else method
    label = args.methods if method in ("full", "shared_neg") else f"{name}-{args.candidate_scheme}"
    if method == "shared_neg":
        label = f"shared_neg-K{args.shared_negatives}"
    elif method != "full":
        label += f"-T{model.output.sampling_options.num_uniform}"
        label += accuracy.proposal_label(model.output.sampling_options, args)
    session = args.session or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M")
    record = dict(
        kind="heldout_trace", task=args.task, label=label, session=session, steps=steps,
        every=every, config=dict(vars(args)), device=accuracy._device(),
        versions=accuracy._versions(), load_avg_end=list(os.getloadavg()),
        explain=model.output.explain(batch=args.batch_size) if method != "shared_neg" else "",
        points=points,
    )  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(
        args.out, f"heldout_trace-{args.task}-{label.replace('@', '-r')}-{session}.json"
    )
    with open(path, "w") as fh:
        json.dump(record, fh, indent=1)
    print(path)
    return record


if __name__ == "__main__":
    main()
