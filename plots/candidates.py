"""Candidate-generator frontier: recall and captured mass vs fraction of classes
scored, from bench/candidates.py's JSON records only.

    python -m plots.candidates [RECORD.json ...] [--out plots]

Without arguments, every record of each problem under bench/results/ (rows of several
records of one problem are drawn together, the latest record's row winning a name). One
figure per problem: left, recall of the exact top-32 (target excluded) against the share of
classes the generator scores exactly (log scale); right, the captured softmax mass of the 63 ids it
returns, as a share of the exact top-63's mass (the ceiling at |S| = 64). One line per
family and setting sweep (nprobe, probes), references as points. Writes
plots/candidates-<problem>.png.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import defaultdict

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.accuracy import RESULTS  # noqa: E402


def _series(rec: dict) -> dict[str, list[dict]]:
    """Rows grouped into lines: everything in a row's name but its nprobe setting."""
    out = defaultdict(list)
    for r in rec["rows"]:
        key = r["name"].split(" nprobe=")[0]
        out[key].append(r)
    return out


def plot_record(rec: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ceiling = max((r["mass"] for r in rec["rows"] if r["family"] == "faiss"), default=None)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for key, rows in sorted(_series(rec).items()):
        rows = sorted(rows, key=lambda r: r["fraction_scored"])
        x = [max(r["fraction_scored"], 1e-5) for r in rows]
        style = "o-" if len(rows) > 1 else "s"
        for ax, metric in zip(axes, ("recall_top32", "mass")):
            y = [r[metric] / (ceiling if metric == "mass" and ceiling else 1) for r in rows]
            ax.plot(x, y, style, label=key, markersize=4)
    dev = rec["device"]
    prob = rec["problem"]
    title = (
        f"{prob.get('task')} n={rec['num_classes']} d={rec['dim']}, {rec['queries']} queries, "
        f"|S|-1={rec['size_returned']}; {dev.get('name')} ({dev.get('torch_threads')} thread), "
        f"load {rec['load_avg_start'][0]:.1f}"
    )
    for ax, lab in zip(
        axes, ("recall of exact top-32 (target excluded)", "captured mass / exact top-63 mass")
    ):
        ax.set_xscale("log")
        ax.set_xlabel("fraction of classes scored exactly per query")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
        ax.axvline(0.05, color="grey", ls=":", lw=1)
    axes[0].axhline(0.5, color="grey", ls=":", lw=1)
    axes[1].axhline(0.8, color="grey", ls=":", lw=1)
    axes[1].legend(fontsize=6, loc="upper left", ncol=1)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[str]:
    p = argparse.ArgumentParser(prog="python -m plots.candidates", description=__doc__)
    p.add_argument("records", nargs="*")
    p.add_argument("--results", default=RESULTS)
    p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = p.parse_args(argv)
    paths = args.records or sorted(glob.glob(os.path.join(args.results, "candidates-*.json")))
    by_tag: dict[str, dict] = {}
    for f in sorted(paths):  # the stamp sorts by time: later rows replace earlier ones
        with open(f) as fh:
            rec = json.load(fh)
        tag = os.path.basename(f).rsplit("-", 2)[0]
        if tag in by_tag:
            rows = {r["name"]: r for r in by_tag[tag]["rows"]}
            rows.update({r["name"]: r for r in rec["rows"]})
            rec = dict(by_tag[tag], rows=list(rows.values()))
        by_tag[tag] = rec
    out = []
    for tag, rec in by_tag.items():
        out.append(plot_record(rec, os.path.join(args.out, f"{tag}.png")))
        print("->", out[-1])
    return out


if __name__ == "__main__":
    main()
