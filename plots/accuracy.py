"""Accuracy vs wall-clock training time per method, from bench/accuracy.py's JSON records only.

    python -m plots.accuracy [--results bench/results] [--task wordnet-synset]
                             [--session 20261127-024000] [--out plots]

Draws, for one session (default: the latest of each task found), exact-softmax P@1 against
training wall seconds (evaluation time excluded), one line per run, with the full softmax's
final P@1 and 95% of it as horizontal guides; a second panel shows held-out P@1 where the
task has one (lemma, teacher). Writes plots/accuracy-<task>-<session>.png and prints the
summary table (bench.accuracy.summarise) with the machine and its load.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.accuracy import (  # noqa: E402
    RESULTS,
    budget_gaps,
    format_table,
    is_full_reference,
    load_records,
    summarise,
)

HERE = os.path.dirname(os.path.abspath(__file__))
STYLE = {
    "full": ("black", "-"),
    "faiss": ("tab:blue", "-"),
    "lsh": ("tab:orange", "-"),
    "uniform": ("tab:gray", ":"),
    "shared_neg": ("tab:green", "--"),
    "auto": ("tab:purple", "-"),
}
DASHES = ["-", "--", "-.", (0, (1, 1))]


def sessions_by_task(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        out.setdefault((r["task"], r["session"]), []).append(r)
    return out


def plot_session(records: list[dict], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heldout = any("heldout_p1" in r["final"] for r in records)
    ppl = any("heldout_ppl" in r["final"] for r in records)  # pycode: perplexity panel
    ncols = 3 if heldout else 2
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 4.8), squeeze=False)
    seen: dict[str, int] = {}
    order = {"full": 0, "faiss": 1, "lsh": 2, "auto": 3, "uniform": 4}
    for r in sorted(records, key=lambda r: (order.get(r["method"], 9), r["label"])):
        color, _ = STYLE.get(r["method"], ("tab:green", "-"))
        k = seen.get(r["method"], 0)
        seen[r["method"]] = k + 1
        ls = ":" if r["method"] == "uniform" else DASHES[k % len(DASHES)]
        t = [p.get("clock_s", p["wall_s"]) for p in r["curve"]]  # the run's budget clock
        name = f"{r['label']} ({r['device']['torch_threads']} thr)"
        if r.get("stopped"):
            name += f", stopped by {r['stopped']}"
        axes[0][0].plot(
            t, [p["p1"] for p in r["curve"]], color=color, ls=ls, marker=".", label=name
        )
        axes[0][1].plot(
            [p["epoch"] for p in r["curve"]],
            [p["p1"] for p in r["curve"]],
            color=color,
            ls=ls,
            marker=".",
            label=name,
        )
        if ppl and "heldout_ppl" in r["final"]:
            pts = [
                (p.get("clock_s", p["wall_s"]), p["heldout_ppl"])
                for p in r["curve"]
                if p["step"] > 0
            ]
            axes[0][2].plot(*zip(*pts), color=color, ls=ls, marker=".", label=name)
        elif heldout and "heldout_p1" in r["final"]:
            axes[0][2].plot(
                t, [p["heldout_p1"] for p in r["curve"]], color=color, ls=ls, marker=".", label=name
            )
    full = [r for r in records if is_full_reference(r)]
    if full:
        ref = full[-1]["final"]["p1"]
        ax = axes[0][0]
        ax.axhline(ref, color="black", lw=0.6, alpha=0.5, label="full's final P@1")
        ax.axhline(0.95 * ref, color="black", lw=0.6, ls="--", alpha=0.5, label="95% of it")
        ax.axvline(
            0.5 * full[-1]["train_wall_s"],
            color="black",
            lw=0.6,
            ls=":",
            alpha=0.5,
            label="half of full's wall time",
        )
    r0 = records[0]
    loads = [x for r in records for x in (r["load_avg_start"][0], r["load_avg_end"][0])]
    data = r0["data"]
    what = "training glosses" if r0["task"] == "wordnet-synset" else "training examples"
    n_eval = r0["eval"]["train_examples"]
    if ppl:
        what, n_eval = "held-out positions", r0["eval"]["heldout_examples"]
    axes[0][0].set_title(
        f"{r0['task']}: {data['num_classes']:,} classes, exact P@1 on {n_eval:,} {what}", fontsize=9
    )
    axes[0][0].set_ylabel("P@1 (exact softmax)")
    axes[0][1].set_title("the same P@1 against epochs (free of the machine's load)", fontsize=9)
    if ppl:
        axes[0][2].set_title(
            f"held-out perplexity, exact over all classes ({r0['eval']['heldout_examples']:,} "
            "positions; log scale)",
            fontsize=9,
        )
        axes[0][2].set_yscale("log")
    elif heldout:
        axes[0][2].set_title(
            f"held-out P@1 ({r0['eval']['heldout_examples']:,} examples)", fontsize=9
        )
        if "bayes_accuracy" in data:
            axes[0][2].axhline(
                data["bayes_accuracy"],
                color="green",
                lw=0.8,
                ls="--",
                label="Bayes (teacher argmax)",
            )
    for i, ax in enumerate(axes[0]):
        cpu = any(r.get("clock") == "cpu" for r in records)
        what = "training CPU seconds of each run" if cpu else "training wall time (s)"
        ax.set_xlabel("epoch" if i == 1 else f"{what}, evaluation excluded")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    dev = r0["device"]
    fig.suptitle(
        f"{dev['name']}, {dev['cpu_count']} cores (thr: torch threads of the run)"
        f"; 1-min load average {min(loads):.1f}-{max(loads):.1f} "
        f"(shared machine); session {r0['session']}",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(
        prog="python -m plots.accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--results", default=RESULTS)
    p.add_argument("--task", default=None)
    p.add_argument(
        "--session",
        nargs="+",
        default=None,
        help="default: the latest session per task; several sessions of one task are drawn "
        "and summarised together (e.g. a refresh-interval session against the main one)",
    )
    p.add_argument("--out", default=HERE)
    p.add_argument(
        "--drop",
        nargs="+",
        default=[],
        metavar="SESSION:LABEL",
        help="leave these runs out (e.g. a run repeated in a later session of the merge)",
    )
    args = p.parse_args(argv)
    recs = load_records(sorted(glob.glob(os.path.join(args.results, "accuracy-*.json"))))
    drop = {tuple(x.split(":", 1)) for x in args.drop}
    recs = [r for r in recs if (r["session"], r["label"]) not in drop]
    if args.session and len(args.session) > 1:  # merged in memory only, under one name
        merged = "+".join(args.session)
        recs = [dict(r, session=merged) for r in recs if r["session"] in args.session]
        args.session = [merged]
    groups = sessions_by_task(recs)
    chosen: dict[str, str] = {}
    for task, session in groups:
        if args.task and task != args.task:
            continue
        if args.session and session not in args.session:
            continue
        chosen[task] = max(chosen.get(task, ""), session)
    written = []
    os.makedirs(args.out, exist_ok=True)
    for task, session in sorted(chosen.items()):
        rs = groups[(task, session)]
        path = plot_session(rs, os.path.join(args.out, f"accuracy-{task}-{session}.png"))
        dev = rs[0]["device"]
        print(f"## {task}, session {session}: {dev['name']}, {dev['cpu_count']} cores")
        print(format_table(summarise(rs)))
        print_budget_gaps(rs)
        print(f"wrote {path}")
        written.append(path)
    if not written:
        print(f"no accuracy records in {args.results}", file=sys.stderr)
    return written


def print_budget_gaps(rs: list[dict]) -> None:
    """Each sampled library run against each hand-written baseline run of the plot: the
    budgets where it is below (bench.accuracy.budget_gaps)."""
    base = [r for r in rs if r["method"] == "shared_neg"]
    ours = [r for r in rs if r["method"] in ("faiss", "lsh", "uniform")]
    for r in ours:
        for b in base:
            gaps = budget_gaps(r, b)
            where = ", ".join(
                f"{g['wall_s']:.0f} s ({g['p1']:.3f} < {g['other_p1']:.3f})" for g in gaps
            )
            print(
                f"{r['label']} vs {b['label']}: "
                + (f"below at {where}" if gaps else "at or above at every budget")
            )


if __name__ == "__main__":
    main()
