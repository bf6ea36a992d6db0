"""data.pycode: tokenizer, vocabulary order, contexts and the by-file split on a tiny tree."""

from __future__ import annotations

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
