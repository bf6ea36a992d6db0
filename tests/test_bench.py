"""The benchmark sweep and the plot script, end to end at tiny sizes (CPU, a few seconds)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from bench import peers, roofline, sweep
from plots import plot

TINY = [
    "--n",
    "100",
    "1000",
    "--N",
    "8",
    "--d",
    "16",
    "--repeats",
    "1",
    "--warmup",
    "1",
    "--num-candidates",
    "16",
    "--num-uniform",
    "16",
    "--budget-s",
    "1",
    "--peak-copy-mb",
    "4",
    "--peak-matmul",
    "64",
    "--no-plot",
    "--no-progress",
]
STEP_FIELDS = (
    "run_id",
    "time",
    "device",
    "device_name",
    "cpu_model",
    "torch_version",
    "triton_version",
    "faiss_version",
    "git_commit",
    "kind",
    "method",
    "n",
    "d",
    "N",
    "dtype",
    "status",
    "reason",
    "median_ms",
    "min_ms",
    "max_ms",
)


def _run(tmp_path: Path, *extra: str) -> list[dict]:
    assert sweep.main([*TINY, "--out-dir", str(tmp_path), *extra]) == 0
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1
    return [json.loads(line) for line in files[0].read_text().splitlines()]


def test_sweep_end_to_end_writes_valid_records(tmp_path, capsys):
    methods = ["full", "faiss", "lsh", "torch", "cce", "liger"]
    recs = _run(tmp_path, "--methods", *methods)
    steps = [r for r in recs if r["kind"] == "step"]
    assert {r["kind"] for r in recs} == {"peak", "step", "roofline"}
    assert sorted((r["n"], r["method"]) for r in steps) == sorted(
        (n, m) for n in (100, 1000) for m in methods
    )
    for r in steps:
        for f in STEP_FIELDS:
            assert f in r, f
        assert r["status"] in sweep.STATUSES
        if r["status"] == "ok":
            assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
            assert r["peak_mem_bytes"] > 0 and r["loss_abs_diff"] is not None
        else:
            assert r["reason"] and r["median_ms"] is None
    ok = {(r["n"], r["method"]): r for r in steps if r["status"] == "ok"}
    for n in (100, 1000):
        for m in ("full", "faiss", "lsh", "torch"):
            assert (n, m) in ok, (n, m)
        assert ok[(n, "full")]["loss_abs_diff"] < 1e-4  # exact paths agree with the exact loss
        assert ok[(n, "torch")]["loss_abs_diff"] < 1e-4
        for m in ("faiss", "lsh"):
            r = ok[(n, m)]
            assert r["resolved_method"] == m
            assert 0.0 <= r["target_recall"] <= 1.0 and 0.0 <= r["top10_recall"] <= 1.0
            assert r["refresh_ms"] > 0 and r["amortised_ms"] >= r["median_ms"]
    if not torch.cuda.is_available():  # CUDA-only peers are skipped on CPU, never timed
        assert all(r["status"] == "skipped" for r in steps if r["method"] in ("cce", "liger"))
    kernels = {r["kernel"] for r in recs if r["kind"] == "roofline"}
    assert {
        "full_ce_fwd",
        "full_ce_bwd",
        "sampled_fwd",
        "sampled_bwd",
        "simhash_queries",
        "simhash_keys",
        "lsh_lookup",
    } <= kernels
    out = capsys.readouterr().out
    assert "vs torch" in out and "legend: " in out  # the summary table is printed


# What the sweep may print: progress bars, its table (machine, section, column header, rows,
# a row's reason, the legend) and the paths it saved. Nothing else (no profiler chatter).
SWEEP_LINE = re.compile(
    r"$"
    r"|\[bench\] records -> \S+$|\[bench\] plots -> .+$|\[bench\] \d+ records in \S+$"
    r"|machine: .+$|== \S+ \S+ d=\d+ N=\d+ ==$|\s+n method\s+status\s+step ms .+$"
    r"|\s+\d+ \S+\s+(ok|skipped|failed|oom)\s.*$|\s+\(.+\)$|legend: .+$"
)
PROGRESS = re.compile(r".*\d+%\|.*\| \d+/\d+ \[.*\]\s*$")


def test_sweep_prints_only_progress_table_legend_and_paths(tmp_path, capfd):
    """At a tiny size, with the CPU memory measurement (torch's profiler) on every step and the
    progress bar on: every line of stdout and stderr, C++ writes included, is one of them."""
    args = [a for a in TINY if a != "--no-progress"]
    methods = ["full", "lsh", "torch", "cce", "shared_neg1024"]
    assert (
        sweep.main(
            [
                *args,
                "--out-dir",
                str(tmp_path),
                "--no-roofline",
                "--n",
                "300",
                "--methods",
                *methods,
            ]
        )
        == 0
    )
    out, err = capfd.readouterr()
    lines = out.splitlines() + [p for line in err.splitlines() for p in line.split("\r")]
    odd = [ln for ln in lines if not (SWEEP_LINE.match(ln) or PROGRESS.match(ln))]
    assert not odd, odd
    assert sum(bool(PROGRESS.match(ln)) for ln in lines) >= 1
    rows = [ln for ln in out.splitlines() if re.match(r"\s+300 ", ln)]
    assert len(rows) == len(methods)  # one row per method, skipped cce included


def test_sweep_lsh_variants_configure_the_index(tmp_path):
    """lsh_live / lsh_copy / lsh_np<p> run the lsh path with rerank_copy False / True and
    lsh_nprobe p (their explain() says so); an unknown variant is refused."""
    methods = ["lsh", "lsh_live", "lsh_copy", "lsh_np3"]
    recs = _run(tmp_path, "--methods", *methods, "--no-roofline", "--n", "1000")
    by = {r["method"]: r for r in recs if r["kind"] == "step"}
    assert all(by[m]["status"] == "ok" and by[m]["resolved_method"] == m for m in methods)
    assert "on a CPU, live rows on CUDA" in by["lsh"]["explain"]
    assert "of live rows" in by["lsh_live"]["explain"]
    assert "a copy of the rows taken at refresh)" in by["lsh_copy"]["explain"]
    assert "nprobe=3" in by["lsh_np3"]["explain"]
    with pytest.raises(SystemExit):
        sweep.main([*TINY, "--out-dir", str(tmp_path), "--methods", "lsh_np0"])


def test_peer_that_does_not_import_is_skipped_not_zero(tmp_path, monkeypatch, capsys):
    spec = peers.PeerSpec("triton_softmax_no_such_peer", lambda mod: None, False, "ghost")
    monkeypatch.setitem(peers.PEERS, "ghost", spec)
    monkeypatch.setitem(
        peers.PEERS,
        "cce",
        peers.PeerSpec("cut_cross_entropy_not_installed", lambda mod: None, True, "cce"),
    )
    recs = _run(tmp_path, "--methods", "ghost", "cce", "torch", "--no-roofline", "--n", "100")
    by = {r["method"]: r for r in recs if r["kind"] == "step"}
    for m, module in (
        ("ghost", "triton_softmax_no_such_peer"),
        ("cce", "cut_cross_entropy_not_installed"),
    ):
        assert by[m]["status"] == "skipped"
        assert module in by[m]["reason"] and "does not import" in by[m]["reason"]
        assert by[m]["median_ms"] is None and by[m]["amortised_ms"] is None
    assert by["torch"]["status"] == "ok"
    assert "does not import" in capsys.readouterr().out


def test_compile_failure_is_recorded(tmp_path, monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    recs = _run(tmp_path, "--methods", "torch_compile", "--no-roofline", "--n", "100")
    (r,) = [r for r in recs if r["kind"] == "step"]
    assert r["status"] == "failed" and "no C++ compiler here" in r["reason"]
    assert r["median_ms"] is None


def _fixture_records() -> list[dict]:
    env = dict(
        run_id="fixture",
        device="cpu",
        device_name="Test CPU",
        cpu_model="Test CPU",
        time="2026-01-02T03:04:05+00:00",
    )
    recs = [
        dict(env, kind="peak", what="copy_bandwidth", value=1e10),
        dict(env, kind="peak", what="matmul", dtype="fp32", value=1e11),
    ]
    for i, n in enumerate((1000, 10000, 100000)):
        for j, m in enumerate(("full", "lsh", "faiss", "torch")):
            t = float((j + 1) * (i + 1))
            recs.append(
                dict(
                    env,
                    kind="step",
                    method=m,
                    n=n,
                    d=16,
                    N=8,
                    dtype="fp32",
                    status="ok",
                    median_ms=t,
                    min_ms=t,
                    max_ms=t,
                    amortised_ms=t,
                    peak_mem_bytes=(i + 1) * 2**20,
                    top10_recall=0.5 if m in ("lsh", "faiss") else None,
                )
            )
        recs.append(
            dict(
                env,
                kind="step",
                method="cce",
                n=n,
                d=16,
                N=8,
                dtype="fp32",
                status="skipped",
                reason="needs CUDA",
                median_ms=None,
            )
        )
        for k in ("full_ce_fwd", "lsh_lookup"):
            w = (
                roofline.full_ce_fwd(8, n, 16, 4)
                if k == "full_ce_fwd"
                else roofline.lsh_lookup(8, 8, 64, 15)
            )
            recs.append(
                dict(
                    env,
                    kind="roofline",
                    kernel=k,
                    method="full",
                    n=n,
                    d=16,
                    N=8,
                    dtype="fp32",
                    median_ms=1.0,
                    peak_bandwidth=1e10,
                    peak_flops=1e11,
                    **roofline.achieved(w, 1e-3, 1e10, 1e11),
                )
            )
    return recs


def test_plot_draws_from_fixture(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "fixture.jsonl").write_text("\n".join(json.dumps(r) for r in _fixture_records()))
    files = plot.main(["--results", str(res), "--out-dir", str(tmp_path / "plots")])
    names = {f.name for f in files}
    assert names == {"time_per_step.png", "speedup.png", "peak_memory.png", "roofline.png"}
    for f in files:
        assert f.stat().st_size > 1000


def test_plot_one_colour_per_method_legend_outside_and_a_quality_panel(tmp_path, monkeypatch):
    colours = [str(plot.style(m)["color"]) for m in plot.ORDER]
    assert len(set(colours)) == len(colours)
    made = {}
    real = plot.plt.subplots

    def spy(*a, **k):
        fig, ax = real(*a, **k)
        made.setdefault("figs", []).append(fig)
        return fig, ax

    monkeypatch.setattr(plot.plt, "subplots", spy)
    monkeypatch.setattr(plot.plt, "close", lambda fig: None)
    res = tmp_path / "results"
    res.mkdir()
    (res / "fixture.jsonl").write_text("\n".join(json.dumps(r) for r in _fixture_records()))
    plot.main(["--results", str(res), "--out-dir", str(tmp_path / "plots")])
    fig = made["figs"][0]  # time_per_step.png
    time_ax, quality_ax = fig.axes[0], fig.axes[1]
    assert quality_ax.get_ylabel() == "recall of the exact top-10"
    assert not time_ax.get_legend() and len(fig.legends) == 1
    box = fig.legends[0].get_window_extent(fig.canvas.get_renderer())
    for ax in fig.axes:  # the legend covers no panel
        assert not box.overlaps(ax.get_window_extent(fig.canvas.get_renderer()))
    drawn = {line.get_label() for line in quality_ax.get_lines()}
    assert drawn and drawn <= {"faiss", "lsh", "faiss_shared", "lsh_shared"}


def test_roofline_bound_is_never_beaten_by_the_bound_itself():
    w = roofline.sampled_fwd(N=256, M=1025, d=128, s=4)
    bw, fl = 1e10, 1e11
    t = roofline.bound_seconds(w, bw, fl)
    a = roofline.achieved(w, t, bw, fl)
    assert a["pct_of_bound"] == pytest.approx(100.0)
    assert a["achieved_gbps"] <= bw / 1e9 * (1 + 1e-9)
    assert a["achieved_gflops"] <= fl / 1e9 * (1 + 1e-9)


def test_step_profile_runs_its_stages_with_the_default_generator(tmp_path):
    """bench.step_profile at toy size: the stage profile follows the lsh path's default
    generator (it read SimHash-table attributes and crashed once clusters became the default)."""
    from bench import step_profile

    out = tmp_path / "prof.json"
    args = ["--n", "3000", "--N", "16", "--d", "16", "--S", "8", "--T", "8", "--K", "16"]
    args += ["--union-S", "2", "--repeats", "1", "--topk-n", "2000", "--topk-N", "8"]
    assert step_profile.main(args + ["--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    stages = rec["stages"]
    assert stages["generator"] == "ClusterIndex" and stages["search"]["median_ms"] > 0
    assert 0 < stages["fraction_scored"] <= 1
    assert stages["grad_max_abs_diff"] < 1e-4  # coalesced dW = the uncoalesced one, summed
    want = {"baseline_shared_neg_K8", "lsh_per_example", "lsh_batch_union_S2", "lsh_search_only"}
    assert want <= set(rec["steps"])
    assert "uniform_search_only" not in rec["steps"]  # uniform has no search
    assert rec["topk"]["same_ids_as_plain"]


def test_cpu_search_floor_runs_and_bounds_the_lsh_search(tmp_path):
    """bench.search_floor at toy size (planted only; no snapshot): one row, its
    lower bound the larger of the FLOP and byte bounds, every part timed."""
    pytest.importorskip("faiss")
    from bench import search_floor as mod

    out = tmp_path / "floor.json"
    assert (
        mod.main(["--n", "20000", "--snapshot", str(tmp_path / "none.pt"), "--out", str(out)]) == 0
    )
    (row,) = json.loads(out.read_text())["rows"]
    assert row["problem"] == "planted" and row["n"] == 20000
    assert 0 < row["share_of_lists_read_per_batch"] <= 1
    assert row["lsh_floor_ms"] == max(row["lsh_flop_floor_ms"], row["lsh_byte_floor_ms"]) > 0
    assert row["faiss_ivfpq_search_ms"] > 0 and row["lsh_topk_of_scores_ms"] > 0
