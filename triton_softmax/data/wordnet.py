"""WordNet 3.0 reverse-dictionary tasks, parsed from the data.* files themselves (no downloads).

The files come from Debian's `wordnet-base` package (/usr/share/wordnet/data.{noun,verb,adj,adv};
`scripts/install.sh` installs it). One synset per line, format wndb(5WN):

    offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...] [frames...] | gloss

w_cnt is two hex digits, lex_id one hex digit, p_cnt three decimal digits, each pointer four
fields; verbs add f_cnt frames after the pointers. Lines starting with two spaces are the
licence header. Adjective words may end in a syntactic marker "(a)", "(p)" or "(ip)", dropped.

Two tasks, both "gloss in, class out":

  synset  the gloss (definition + examples) of each synset -> that synset (117,659 classes,
          one example per class: there is nothing to hold out, so accuracy is measured on
          the training glosses, i.e. how well the model fits the dictionary)
  lemma   the gloss of each synset -> each of its lemmas (~148K classes); a lemma with several
          senses gets several examples. Whole synsets are held out (never seen in training)
          where every one of their lemmas keeps a sense in training, for held-out accuracy.
          A prediction counts as a hit when it is any lemma of the gloss's synset.

Tokenisation: lowercase, split on non-letters. Inputs are bags of token ids in the flat
`tokens` + `starts`/`lengths` layout that nn.EmbeddingBag takes as (input, offsets).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field

import torch

DEFAULT_DIR = "/usr/share/wordnet"
POS_FILES = ("noun", "verb", "adj", "adv")
_TOKEN = re.compile(r"[a-z]+")
_MARKER = re.compile(r"\((a|p|ip)\)$")


class WordNetNotFound(FileNotFoundError):
    """The WordNet data files are missing (install Debian's wordnet-base)."""


@dataclass(frozen=True)
class Synset:
    key: str  # "<ss_type><offset>", e.g. "n00001740": unique across the four files
    pos: str  # n, v, a, s (adjective satellite), r
    lemmas: tuple[str, ...]  # lowercase, "_" joins multi-word lemmas, markers dropped
    gloss: str


def tokenize(text: str) -> list[str]:
    """Lowercase, split on non-letters."""
    return _TOKEN.findall(text.lower())


def parse_data_line(line: str) -> Synset | None:
    """One data.* line -> Synset (None for the licence header and blank lines)."""
    if not line.strip() or line.startswith(" "):
        return None
    head, sep, gloss = line.partition(" | ")
    if not sep:  # a synset with an empty gloss ends in " |"
        head, gloss = line.rstrip().removesuffix("|"), ""
    f = head.split()
    if len(f) < 6:
        raise ValueError(f"malformed WordNet data line: {line[:80]!r}")
    offset, ss_type, w_cnt = f[0], f[2], int(f[3], 16)
    words = f[4 : 4 + 2 * w_cnt : 2]
    if len(words) != w_cnt:
        raise ValueError(f"malformed WordNet data line (w_cnt={w_cnt}): {line[:80]!r}")
    lemmas = tuple(dict.fromkeys(_MARKER.sub("", w).lower() for w in words))
    return Synset(f"{ss_type}{offset}", ss_type, lemmas, gloss.strip())


def read_synsets(root: str | os.PathLike = DEFAULT_DIR) -> list[Synset]:
    """Every synset of data.{noun,verb,adj,adv} under `root`, in file order."""
    paths = [os.path.join(root, f"data.{p}") for p in POS_FILES]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise WordNetNotFound(
            f"WordNet 3.0 data files not found: {', '.join(missing)}. They come from the "
            "Debian package `wordnet-base` (apt-get install wordnet-base, as scripts/install.sh "
            "does), or pass the directory that holds data.noun/verb/adj/adv."
        )
    out: list[Synset] = []
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                s = parse_data_line(line)
                if s is not None:
                    out.append(s)
    return out


@dataclass
class Bags:
    """Variable-length token bags: example i is tokens[starts[i] : starts[i] + lengths[i]]."""

    tokens: torch.Tensor  # (T,) int64
    starts: torch.Tensor  # (N,) int64
    lengths: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.starts.numel())

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input (sum of lengths,) int64, offsets (B,) int64) for nn.EmbeddingBag."""
        lengths, starts = self.lengths[idx], self.starts[idx]
        offsets = torch.cumsum(lengths, 0) - lengths
        total = int(lengths.sum())
        pos = torch.repeat_interleave(starts - offsets, lengths, output_size=total)
        return self.tokens[pos + torch.arange(total)], offsets

    def padded(self, idx: torch.Tensor | None = None, pad: int = -1) -> torch.Tensor:
        """(B, max length) int64 token ids, `pad` after each bag's end."""
        idx = torch.arange(len(self)) if idx is None else idx
        lengths, starts = self.lengths[idx], self.starts[idx]
        width = int(lengths.max()) if len(idx) else 0
        col = torch.arange(width)
        ok = col.unsqueeze(0) < lengths.unsqueeze(1)
        pos = (starts.unsqueeze(1) + col).clamp(max=max(self.tokens.numel() - 1, 0))
        return torch.where(ok, self.tokens[pos], torch.full_like(pos, pad))


@dataclass
class TextTask:
    """A gloss -> class task. `label_sets` lists every class that counts as a hit (-1 pads)."""

    name: str
    vocab: list[str]
    class_names: list[str]
    train: Bags
    train_labels: torch.Tensor  # (N,) int64: the training target
    train_label_sets: torch.Tensor  # (N, m) int64
    heldout: Bags | None = None
    heldout_label_sets: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _bags(token_lists: list[list[str]], index: dict[str, int]) -> Bags:
    ids = [[index[t] for t in toks if t in index] for toks in token_lists]
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.int64)
    starts = torch.cumsum(lengths, 0) - lengths
    flat = torch.tensor([t for x in ids for t in x], dtype=torch.int64)
    return Bags(flat, starts, lengths)


def _vocab(token_lists: list[list[str]], min_count: int) -> tuple[list[str], dict[str, int]]:
    counts = Counter(t for toks in token_lists for t in toks)
    vocab = sorted(t for t, c in counts.items() if c >= min_count)
    return vocab, {t: i for i, t in enumerate(vocab)}


def _label_sets(rows: list[list[int]]) -> torch.Tensor:
    m = max((len(r) for r in rows), default=1)
    out = torch.full((len(rows), max(m, 1)), -1, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
    return out


def synset_task(
    root: str | os.PathLike = DEFAULT_DIR,
    max_classes: int | None = None,
    min_count: int = 1,
    seed: int = 0,
) -> TextTask:
    """Gloss -> synset. max_classes keeps a random subset of synsets (seeded)."""
    synsets = read_synsets(root)
    if max_classes is not None and max_classes < len(synsets):
        gen = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(synsets), generator=gen)[:max_classes].sort().values
        synsets = [synsets[i] for i in keep.tolist()]
    toks = [tokenize(s.gloss) for s in synsets]
    vocab, index = _vocab(toks, min_count)
    labels = torch.arange(len(synsets), dtype=torch.int64)
    return TextTask(
        name="wordnet-synset",
        vocab=vocab,
        class_names=[s.key for s in synsets],
        train=_bags(toks, index),
        train_labels=labels,
        train_label_sets=labels.unsqueeze(1).clone(),
        info=dict(source=str(root), synsets=len(synsets), gloss_tokens=sum(map(len, toks))),
    )


def lemma_task(
    root: str | os.PathLike = DEFAULT_DIR,
    max_classes: int | None = None,
    heldout_fraction: float = 0.1,
    min_count: int = 1,
    seed: int = 0,
) -> TextTask:
    """Gloss -> lemma, with whole synsets held out for a generalisation figure.

    Examples are (synset gloss, lemma) pairs, one per sense. A synset is held out (in a
    seeded random order, up to heldout_fraction of all synsets) only if each of its lemmas
    still has another sense in training, so every held-out gloss is unseen and every class
    it should predict has been trained on. max_classes keeps a random subset of lemmas.
    The vocabulary is built from the training glosses only.
    """
    synsets = read_synsets(root)
    gen = torch.Generator().manual_seed(seed)
    lemma_names = sorted({lem for s in synsets for lem in s.lemmas})
    if max_classes is not None and max_classes < len(lemma_names):
        keep = torch.randperm(len(lemma_names), generator=gen)[:max_classes].tolist()
        lemma_names = sorted(lemma_names[i] for i in keep)
    lid = {lem: i for i, lem in enumerate(lemma_names)}
    senses = [[lid[lem] for lem in s.lemmas if lem in lid] for s in synsets]
    kept = [i for i, ls in enumerate(senses) if ls]
    train_count = Counter(lem for i in kept for lem in senses[i])
    budget = int(heldout_fraction * len(kept))
    held: list[int] = []
    for j in torch.randperm(len(kept), generator=gen).tolist():
        if len(held) >= budget:
            break
        i = kept[j]
        if all(train_count[lem] >= 2 for lem in senses[i]):
            held.append(i)
            for lem in senses[i]:
                train_count[lem] -= 1
    held_set = set(held)
    train_syn = [i for i in kept if i not in held_set]
    held.sort()
    toks = {i: tokenize(synsets[i].gloss) for i in kept}
    vocab, index = _vocab([toks[i] for i in train_syn], min_count)
    ex_syn = [i for i in train_syn for _ in senses[i]]
    ex_lab = [lem for i in train_syn for lem in senses[i]]
    return TextTask(
        name="wordnet-lemma",
        vocab=vocab,
        class_names=lemma_names,
        train=_bags([toks[i] for i in ex_syn], index),
        train_labels=torch.tensor(ex_lab, dtype=torch.int64),
        train_label_sets=_label_sets([senses[i] for i in ex_syn]),
        heldout=_bags([toks[i] for i in held], index),
        heldout_label_sets=_label_sets([senses[i] for i in held]),
        info=dict(
            source=str(root),
            synsets=len(kept),
            heldout_synsets=len(held),
            train_examples=len(ex_lab),
            lemmas=len(lemma_names),
        ),
    )
