"""data.pycode: tokenizer, vocabulary order, contexts and the by-file split on a tiny tree."""

from __future__ import annotations

import json
import os

import torch

from triton_softmax.data import pycode


def _tree(tmp_path):
    for i in range(60):
        (tmp_path / f"m{i:02d}.py").write_text(f"def f{i % 3}(x):\n    return x + {i % 2}\n")
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "skip.py").write_text("never_seen = 1\n")
    return str(tmp_path)


def test_tokenize_keeps_identifiers_numbers_newlines_and_symbols():
    assert pycode.tokenize("a_1 = f(2.5)\n") == ["a_1", "=", "f", "(", "2.5", ")", "\n"]


def test_split_vocab_and_contexts(tmp_path):
    root = _tree(tmp_path)
    t = pycode.build(root, heldout_mod=7, context=3)
    assert t.vocab[:2] == ["<file>", "<unk>"] and "never_seen" not in t.vocab
    counts = t.counts[2:]
    assert bool((counts[:-1] >= counts[1:]).all())  # most frequent first
    assert t.info["heldout_files"] + t.info["train_files"] == 60 and t.info["heldout_files"] > 0
    # the same tree gives the same split and streams
    again = pycode.build(root, heldout_mod=7, context=3)
    assert torch.equal(t.train, again.train) and torch.equal(t.heldout, again.heldout)
    # example i: the 3 tokens before position i + 1 (<file> before the start), target i + 1
    idx = torch.tensor([0, 1, 5])
    ctx = t.contexts(idx)
    s = t.train.long()
    assert ctx[0].tolist() == [0, 0, int(s[0])]
    assert ctx[2].tolist() == s[3:6].tolist()
    assert t.labels()[5] == s[6]
    assert t.num_examples() == s.numel() - 1


def test_heldout_trace_trains_as_bench_accuracy_does(tmp_path, monkeypatch):
    """bench.heldout_trace's perplexity every 2 steps equals bench.accuracy's evaluations of the
    same run (same model, data order, optimizers and held-out sample), on a small tree."""
    from bench import accuracy, heldout_trace
    from triton_softmax import data as tsd

    (tmp_path / "src").mkdir()
    root = _tree(tmp_path / "src")
    monkeypatch.setattr(
        tsd, "pycode_task", lambda context: pycode.build(root, heldout_mod=7, context=context)
    )
    common = ["--task", "pycode", "--methods", "full", "--batch-size", "128", "--epochs", "2",
              "--eval-examples", "16", "--threads", "1", "--no-progress", "--context", "3",
              "--session", "t"]  # fmt: skip
    runs = accuracy.main([*common, "--evals-per-epoch", "2", "--out", str(tmp_path / "a")])
    per_epoch = runs[0]["steps_per_epoch"]
    assert per_epoch == 6  # 727 examples: an evaluation every 3 steps in both
    every = ["--steps", str(2 * per_epoch), "--every", str(per_epoch // 2)]
    trace = heldout_trace.main([*common, *every, "--out", str(tmp_path / "t")])
    want = {p["step"]: p["heldout_ppl"] for p in runs[0]["curve"] if p["step"]}
    got = {p["step"]: p["heldout_ppl"] for p in trace["points"]}
    assert got.keys() == want.keys() and len(got) == 4
    assert all(abs(got[s] - want[s]) <= 1e-9 * want[s] for s in got)
    # the plot of the records: each run's rise over its running minimum, from a step on
    from bench.heldout_trace import rise
    from plots import heldout_trace as trace_plot

    pts = [dict(step=s, heldout_ppl=v) for s, v in [(100, 9.0), (200, 4.0), (300, 5.0), (400, 3.0)]]
    assert rise(pts, from_step=200)[:2] == (1.25, 300)  # 5 / 4; 9 is before 200
    trace["session"] = "t"
    with open(tmp_path / "t" / "heldout_trace-x.json", "w") as f:
        json.dump(trace, f)
    png = trace_plot.main(
        ["--session", "t", "--results", str(tmp_path / "t"), "--out", str(tmp_path)]
    )
    assert os.path.getsize(png) > 10_000
