"""Draw the benchmark figures from bench/results records (and nothing else).

    python -m plots.plot                                   # every run in bench/results
    python -m plots.plot --results bench/results/cpu_x.jsonl --out-dir plots
    python plots/plot.py --device cpu --dtype fp32 --d 128 --N 256

Figures (PNG, one panel per (device, dtype, d, N) left after the filters):
  time_per_step.png  step time vs class count, log-log, one line per path/peer
                     (faiss/lsh: amortised step = step + index refresh / refresh_every),
                     and beside it the recall of the exact top-10 against step time
  speedup.png        plain-PyTorch step time / each method's (amortised) step time
  peak_memory.png    peak memory of a step vs class count
  roofline.png       per device: achieved GFLOP/s vs arithmetic intensity under the measured
                     roof, and achieved % of the roofline bound per kernel and class count
Where one (device, dtype, d, N, n, method) was measured in several runs, the latest counts.
Methods not drawn in a panel (skipped, oom, failed) are listed under it with their status, and
so are points where the dispatcher ran another path than the one asked for (e.g. faiss ran
full because |S| + |T| >= n). Every method has its own colour; the legend sits outside the panels.
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ORDER = [
    "lsh",
    "lsh_copy",
    "lsh_live",
    "lsh_shared",
    "faiss",
    "faiss_shared",
    "faiss_ivf",
    "uniform",
    "uniform_shared",
    "full",
    "torch",
    "torch_compile",
    "cce",
    "liger",
    "shared_neg1024",
    "shared_neg_matched",
]
# One colour per method (a reader matches lines by colour first): the sampled paths warm, the
# exact ones and the peers cool, the hand-written baseline grey; no two methods share one.
_TAB20 = plt.get_cmap("tab20").colors
STYLE = {
    "lsh": dict(color=_TAB20[6], marker="o"),
    "lsh_copy": dict(color=_TAB20[7], marker="o", linestyle=":"),
    "lsh_live": dict(color=_TAB20[13], marker="o", linestyle=":"),
    "lsh_shared": dict(color=_TAB20[12], marker="o", linestyle="-."),
    "faiss": dict(color=_TAB20[2], marker="s"),
    "faiss_shared": dict(color=_TAB20[3], marker="s", linestyle="-."),
    "faiss_ivf": dict(color=_TAB20[16], marker="s", linestyle=":"),
    "uniform": dict(color=_TAB20[10], marker="<"),
    "uniform_shared": dict(color=_TAB20[11], marker="<", linestyle="-."),
    "full": dict(color=_TAB20[0], marker="^"),
    "torch": dict(color="black", marker="x", linestyle="--"),
    "torch_compile": dict(color=_TAB20[1], marker="+", linestyle="--"),
    "cce": dict(color=_TAB20[4], marker="D", linestyle=":"),
    "liger": dict(color=_TAB20[8], marker="v", linestyle=":"),
    "shared_neg1024": dict(color=_TAB20[14], marker="P", linestyle="--"),
    "shared_neg_matched": dict(color=_TAB20[15], marker="P", linestyle=":"),
}
_SPARE = [_TAB20[i] for i in (5, 9, 17, 18, 19)]


def style(method: str) -> dict:
    """The method's line style; a method without one (lsh_np20, say) takes a spare colour."""
    if method in STYLE:
        return STYLE[method]
    return dict(color=_SPARE[sum(map(ord, method)) % len(_SPARE)], marker=".", linestyle="-.")


def _method_order(methods) -> list[str]:
    return sorted(methods, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m))


def _legend_outside(fig, axes) -> None:
    """One legend for the figure, right of the panels, so it never covers a point."""
    seen: dict = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    if seen:
        labels = _method_order(seen)
        fig.legend(
            [seen[lab] for lab in labels],
            labels,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize=8,
            frameon=False,
        )


def load_records(paths: list[Path]) -> list[dict]:
    """Every JSON line of the given .jsonl files (directories: their *.jsonl files)."""
    files: list[Path] = []
    for p in paths:
        files += sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    out = []
    for f in files:
        for line in f.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def _latest(records: list[dict], key) -> list[dict]:
    best: dict = {}
    for r in records:
        k = key(r)
        if k not in best or str(r.get("time", "")) >= str(best[k].get("time", "")):
            best[k] = r
    return list(best.values())


def _panel_key(r: dict) -> tuple:
    return (r.get("device_name", r.get("device")), r["dtype"], r["d"], r["N"])


def _filter(records: list[dict], args) -> list[dict]:
    def keep(r):
        if args.device and r.get("device") not in args.device:
            return False
        if args.dtype and r.get("dtype") not in args.dtype:
            return False
        if args.d and r.get("d") not in args.d:
            return False
        if args.N and r.get("N") not in args.N:
            return False
        return not (
            args.methods and r.get("kind") == "step" and r.get("method") not in args.methods
        )

    return [r for r in records if keep(r)]


def _dates(records: list[dict]) -> str:
    days = sorted({str(r.get("time", ""))[:10] for r in records if r.get("time")})
    if not days:
        return "undated"
    return days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}"


def _grid(n_panels: int):
    cols = min(3, n_panels)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _step_time(r: dict) -> float | None:
    return r.get("amortised_ms") or r.get("median_ms")


def _panels(
    steps: list[dict],
    value,
    ylabel: str,
    title: str,
    out: Path,
    *,
    logy=True,
    hline: float | None = None,
    quality: bool = False,
) -> Path | None:
    """One panel per (device, dtype, d, N) of value(r) against n; with quality=True each
    panel has a second one beside it: recall of the exact top-10 against step time."""
    groups = defaultdict(list)
    for r in steps:
        groups[_panel_key(r)].append(r)
    if not groups:
        return None
    keys = sorted(groups, key=lambda k: tuple(str(x) for x in k))
    quality_axes: list = []
    all_notes: list[str] = []
    if quality:
        fig, grid = plt.subplots(len(keys), 2, figsize=(11, 4.4 * len(keys)), squeeze=False)
        axes, quality_axes = [row[0] for row in grid], [row[1] for row in grid]
    else:
        fig, axes = _grid(len(keys))
    for ax, key in zip(axes, keys, strict=False):
        rows = groups[key]
        notes = []
        methods = _method_order({r["method"] for r in rows})
        for m in methods:
            pts = sorted(
                (r["n"], value(r, rows)) for r in rows if r["method"] == m and r["status"] == "ok"
            )
            pts = [(x, y) for x, y in pts if y is not None and y > 0]
            bad = sorted({r["status"] for r in rows if r["method"] == m and r["status"] != "ok"})
            if bad:
                notes.append(
                    f"{m}: {'/'.join(bad)} (not drawn) at n="
                    + ",".join(
                        f"{r['n']:.0e}" for r in rows if r["method"] == m and r["status"] != "ok"
                    )
                )
            ran = sorted(
                {
                    (r["resolved_method"], r["n"])
                    for r in rows
                    if r["method"] == m
                    and r["status"] == "ok"
                    and r.get("resolved_method") not in (None, m)
                }
            )
            if ran:
                notes.append(f"{m} ran " + ", ".join(f"{rm} at n={n:.0e}" for rm, n in ran))
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=m, **style(m))
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        if hline is not None:
            ax.axhline(hline, color="0.6", linewidth=0.8)
        dev, dt, d, N = key
        ax.set_title(f"{dev}\n{dt}, d={d}, N={N}", fontsize=9)
        ax.set_xlabel("classes n")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if notes:  # under the figure, one line per panel: long notes never squeeze a panel
            all_notes.append(f"{dev} {dt} d={d} N={N}: " + "; ".join(notes)[:300])
    if quality:
        for ax, key in zip(quality_axes, keys, strict=False):
            _quality_panel(ax, key, groups[key])
    fig.suptitle(
        f"{title}\n{', '.join(sorted({str(k[0]) for k in keys}))} — {_dates(steps)}", fontsize=10
    )
    fig.tight_layout()
    _legend_outside(fig, axes + quality_axes)
    if all_notes:
        fig.text(
            0.01, -0.01, "\n".join(textwrap.fill(t, 160) for t in all_notes), fontsize=6, va="top"
        )
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def _quality_panel(ax, key: tuple, rows: list[dict]) -> None:
    """Recall of the exact top-10 against step time: what each sampled step buys. One point
    per (method, n), labelled with n; the exact paths and peers have recall 1 by definition
    and are not drawn."""
    for m in _method_order({r["method"] for r in rows}):
        pts = sorted(
            (r["n"], _step_time(r), r.get("top10_recall"))
            for r in rows
            if r["method"] == m
            and r["status"] == "ok"
            and r.get("top10_recall") is not None
            and r.get("resolved_method") in (None, m)
            and _step_time(r)
        )
        if not pts:
            continue
        st = style(m)
        ax.plot(
            [p[1] for p in pts],
            [p[2] for p in pts],
            label=m,
            color=st["color"],
            marker=st.get("marker", "o"),
            linestyle=st.get("linestyle", "-"),
        )
        for n, t, rec in pts:
            ax.annotate(f"{n:.0e}", (t, rec), fontsize=6, xytext=(3, 3), textcoords="offset points")
    dev, dt, d, N = key
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{dev}\n{dt}, d={d}, N={N}: quality vs time (labels: n)", fontsize=9)
    ax.set_xlabel("ms per step (with the refresh spread)")
    ax.set_ylabel("recall of the exact top-10")
    ax.grid(True, which="both", alpha=0.3)


def _speedup(r: dict, rows: list[dict]) -> float | None:
    base = next(
        (b for b in rows if b["method"] == "torch" and b["n"] == r["n"] and b["status"] == "ok"),
        None,
    )
    t = _step_time(r)
    return base["median_ms"] / t if base and t else None


def roofline_figure(records: list[dict], out: Path) -> Path | None:
    roof = [r for r in records if r.get("kind") == "roofline"]
    if not roof:
        return None
    devices = sorted({(r.get("device_name"), r["dtype"]) for r in roof}, key=str)
    fig, axes = plt.subplots(len(devices), 2, figsize=(12, 4.5 * len(devices)), squeeze=False)
    for (dev, dt), (ax_r, ax_b) in zip(devices, axes, strict=True):
        rows = [r for r in roof if r.get("device_name") == dev and r["dtype"] == dt]
        bw = max(r["peak_bandwidth"] for r in rows)
        fl = max(r["peak_flops"] for r in rows)
        kernels = sorted({r["kernel"] for r in rows})
        cmap = plt.get_cmap("tab10")
        pts = [r for r in rows if r.get("intensity_flop_per_byte")]
        if pts:
            xs = [r["intensity_flop_per_byte"] for r in pts]
            lo, hi = min(xs + [fl / bw]) / 4, max(xs + [fl / bw]) * 4
            grid = [lo * (hi / lo) ** (i / 100) for i in range(101)]
            ax_r.plot(
                grid,
                [min(fl, x * bw) / 1e9 for x in grid],
                color="k",
                label=f"roof: {bw / 1e9:.1f} GB/s, {fl / 1e9:.3g} GFLOP/s",
            )
            for i, k in enumerate(kernels):
                kp = [r for r in pts if r["kernel"] == k]
                if kp:
                    ax_r.scatter(
                        [r["intensity_flop_per_byte"] for r in kp],
                        [r["achieved_gflops"] for r in kp],
                        color=cmap(i),
                        label=k,
                    )
                    for r in kp:
                        ax_r.annotate(
                            f"n={r['n']:.0e}",
                            (r["intensity_flop_per_byte"], r["achieved_gflops"]),
                            fontsize=6,
                        )
            ax_r.set_xscale("log")
            ax_r.set_yscale("log")
            ax_r.set_xlabel("arithmetic intensity (FLOP/byte, compulsory traffic)")
            ax_r.set_ylabel("achieved GFLOP/s")
            ax_r.legend(fontsize=7)
            ax_r.grid(True, which="both", alpha=0.3)
        ax_r.set_title(f"{dev} {dt}: roofline", fontsize=9)
        labels, vals, colors = [], [], []
        for i, k in enumerate(kernels):
            for r in sorted((r for r in rows if r["kernel"] == k), key=lambda r: r["n"]):
                labels.append(f"{k} n={r['n']:.0e} N={r['N']} d={r['d']}")
                vals.append(r["pct_of_bound"])
                colors.append(cmap(i))
        ax_b.barh(range(len(vals)), vals, color=colors)
        ax_b.set_yticks(range(len(vals)), labels, fontsize=6)
        ax_b.set_xscale("log")
        ax_b.set_xlabel("% of roofline bound (achieved vs max(bytes/BW, FLOPs/peak))")
        ax_b.set_title(f"{dev} {dt}: achieved / bound per kernel", fontsize=9)
        ax_b.grid(True, axis="x", which="both", alpha=0.3)
    fig.suptitle(f"Roofline — {_dates(roof)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Plot bench/results records.")
    p.add_argument(
        "--results",
        type=Path,
        nargs="+",
        default=[RESULTS],
        help="result .jsonl files or directories (default bench/results)",
    )
    p.add_argument("--out-dir", type=Path, default=ROOT / "plots")
    p.add_argument("--device", nargs="+", help="cpu / cuda")
    p.add_argument("--dtype", nargs="+")
    p.add_argument("--d", type=int, nargs="+")
    p.add_argument("--N", type=int, nargs="+")
    p.add_argument("--methods", nargs="+")
    return p.parse_args(argv)


def main(argv=None) -> list[Path]:
    """Draw every figure the records allow; returns the PNG paths written."""
    args = parse_args(argv)
    records = _filter(load_records(args.results), args)
    steps = _latest(
        [r for r in records if r.get("kind") == "step"],
        lambda r: (*_panel_key(r), r["n"], r["method"]),
    )
    roof = _latest(
        [r for r in records if r.get("kind") == "roofline"],
        lambda r: (*_panel_key(r), r["n"], r["kernel"], r.get("method")),
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    written = [
        _panels(
            steps,
            lambda r, rows: _step_time(r),
            "ms per step (fwd+bwd+SGD)",
            "Time per training step vs classes (faiss/lsh amortise the index refresh)",
            args.out_dir / "time_per_step.png",
            quality=True,
        ),
        _panels(
            steps,
            _speedup,
            "speedup over plain PyTorch (x)",
            "Speedup over F.cross_entropy(h @ W.T, y) per step",
            args.out_dir / "speedup.png",
            hline=1.0,
        ),
        _panels(
            steps,
            lambda r, rows: r.get("peak_mem_bytes") and r["peak_mem_bytes"] / 2**20,
            "peak MiB in a step",
            "Peak memory of a training step vs classes",
            args.out_dir / "peak_memory.png",
        ),
        roofline_figure(roof, args.out_dir / "roofline.png"),
    ]
    return [w for w in written if w is not None]


if __name__ == "__main__":
    for path in main():
        print(f"wrote {path}")
