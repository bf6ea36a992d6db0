"""Quality at fixed wall-clock budgets from bench.accuracy records (a markdown table).

    python3 -m bench.budget_table bench/results/accuracy-pycode-*-cpu-20261207.json \
        [--budgets 30,60,120,180,240] [--key heldout_ppl|p1]

Each cell is the run's evaluation at the first step at or past the budget (bench.accuracy
--eval-at evaluates exactly there, so a cell is at most one step late: see s/step), with
that step count in brackets; "-" where the run ended before the budget. Training wall time only
(evaluation excluded). The load column is the 1-minute load average at start / end.
"""

from __future__ import annotations

import argparse
import json

from bench.report import at_budget


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("records", nargs="+")
    ap.add_argument("--budgets", default="30,60,120,180,240")
    ap.add_argument("--key", default="heldout_ppl")
    a = ap.parse_args()
    budgets = [float(b) for b in a.budgets.split(",")]
    head = "| run | s/step | " + " | ".join(f"{b:g} s" for b in budgets) + " | load 1m |"
    print(head)
    print("|" + "---|" * (len(budgets) + 3))
    fmt = ".1f" if "ppl" in a.key else ".3f"
    for path in a.records:
        with open(path) as fh:
            r = json.load(fh)
        cells = []
        for b in budgets:
            v = at_budget(r["curve"], b, a.key)  # on the run's clock (wall or cpu)
            cells.append("-" if v is None else f"{format(v[0], fmt)} ({v[1]})")
        secs = r["train_cpu_s"] if r.get("clock") == "cpu" else r["train_wall_s"]
        sps = secs / max(r["steps"], 1)
        load = f"{r['load_avg_start'][0]:.1f}/{r['load_avg_end'][0]:.1f}"
        print(f"| {r['label']} | {sps:.2f} | " + " | ".join(cells) + f" | {load} |")


if __name__ == "__main__":
    main()
