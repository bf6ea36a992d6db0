"""Held-out perplexity against training step, from bench/heldout_trace.py's JSON records only.

    python -m plots.heldout_trace --session cpu-pycode-head-20261207 [--session ...]
                                  [--results bench/results] [--out plots]

One line per record of the named sessions (log scale; the first 100 steps, where every run
falls from ~10^5, are cut), and below it each run's rise: perplexity over its running minimum
from step 200 on, the figure the defaults are judged by (a run whose perplexity does not rise
stays at 1). Writes plots/heldout-trace-<task>-<sessions>.png and prints each run's worst rise
and the step it happened at.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.heldout_trace import FROM_STEP, rise  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(os.path.dirname(HERE), "bench", "results")


def load(results: str, sessions: list[str]) -> list[dict]:
    records = []
    for path in sorted(glob.glob(os.path.join(results, "heldout_trace-*.json"))):
        with open(path) as f:
            r = json.load(f)
        if r.get("session") in sessions:
            records.append(r)
    if not records:
        raise SystemExit(f"no heldout_trace records of sessions {sessions} in {results}")
    return records


def plot(records: list[dict], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.5, 7.5), sharex=True)
    for r in records:
        pts = [p for p in r["points"] if p["step"] >= 100]
        name = (
            f"{r['label']} ({r['session']})"
            if len({x["session"] for x in records}) > 1
            else r["label"]
        )
        top.plot([p["step"] for p in pts], [p["heldout_ppl"] for p in pts], label=name)
        _, _, ratios = rise(r["points"])
        bottom.plot([s for s, _ in ratios], [x for _, x in ratios], label=r["label"])
    top.set_yscale("log")
    top.set_ylabel("held-out perplexity (all classes)")
    top.set_title(f"{records[0]['task']}: held-out perplexity every {records[0]['every']} steps")
    top.legend(fontsize=7)
    bottom.axhline(1.0, color="black", lw=0.6)
    bottom.set_ylabel(f"perplexity / running min (from step {FROM_STEP})")
    bottom.set_xlabel("training step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--session", action="append", required=True)
    p.add_argument("--results", default=RESULTS)
    p.add_argument("--out", default=HERE)
    args = p.parse_args(argv)
    records = load(args.results, args.session)
    for r in records:
        worst, at, _ = rise(r["points"])
        print(f"{r['label']:50s} {r['session']:40s} worst rise {worst:.2f}x at step {at}")
    name = f"heldout-trace-{records[0]['task']}-{'+'.join(args.session)}.png"
    return plot(records, os.path.join(args.out, name))


if __name__ == "__main__":
    print(main())
