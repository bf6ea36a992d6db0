"""A Zipfian next-token task over the Python standard library's source on this machine.

Language-model-shaped, unlike WordNet's one-example-per-class glosses: a few classes ("(",
".", "self", newline) take a large share of the targets and ~10^5 identifiers, numbers and
words of comments form a long tail, most seen a handful of times. It needs no download: the
source is `sysconfig.get_paths()["stdlib"]` (site-packages excluded).

Tokenisation (`tokenize`): a regex over the raw text, case kept: identifiers
[A-Za-z_][A-Za-z0-9_]*, numbers (a digit then word characters and dots), a newline token
"\\n", and every other non-space character alone (string quotes, operators, brackets).
Files are read in sorted path order, each preceded by a boundary token "<file>".

Split (deterministic, by file): a file is held out when the CRC32 of its path relative to
the stdlib root is 0 mod `heldout_mod` (about 1 file in 50 by default); every other file is
for training. The vocabulary: "<file>" (class 0), "<unk>" (class 1), then every token seen
at least `min_count` times in the training files, most frequent first; tokens outside it
(held-out only, with min_count 1) map to "<unk>".

Examples: every position p >= 1 of the token stream; the input is the `context` tokens
before p (padded with "<file>" at the stream's start), the target the token at p. Only the
flat int32 stream is stored; `contexts(pos)` builds the (B, context) windows on the fly.

Cached as a torch file under ~/.cache/triton_softmax/ keyed by the Python version, the
stdlib path, min_count, heldout_mod and a format version.
"""

from __future__ import annotations

import hashlib
import os
import re
import sysconfig
import zlib
from collections import Counter
from dataclasses import dataclass, field

import torch

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d[\w.]*|\n|[^\s]")
FILE, UNK = "<file>", "<unk>"
FORMAT = 1
SKIP_DIRS = frozenset(("site-packages", "dist-packages", "__pycache__"))


def tokenize(text: str) -> list[str]:
    """Identifiers, numbers, newlines and single non-space characters, in order."""
    return _TOKEN.findall(text)


def stdlib_files(root: str | None = None) -> tuple[str, list[str]]:
    """(root, sorted relative paths of the .py files under it, site-packages excluded)."""
    root = root or sysconfig.get_paths()["stdlib"]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for f in sorted(filenames):
            if f.endswith(".py"):
                out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return root, sorted(out)


@dataclass
class PyCodeTask:
    """Token streams and vocabulary. train / heldout: (L,) int32 class ids; vocab[i] is
    class i's token; counts (n,) int64: training occurrences per class."""

    name: str
    vocab: list[str]
    counts: torch.Tensor
    train: torch.Tensor
    heldout: torch.Tensor
    context: int
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.vocab)

    def num_examples(self, split: str = "train") -> int:
        return int((self.train if split == "train" else self.heldout).numel()) - 1

    def labels(self, split: str = "train") -> torch.Tensor:
        """(L - 1,) int64 targets: the token at positions 1..L-1."""
        s = self.train if split == "train" else self.heldout
        return s[1:].long()

    def contexts(self, idx: torch.Tensor, split: str = "train") -> torch.Tensor:
        """(B, context) int64: the tokens before target position idx + 1 (example idx),
        oldest first; positions before the stream's start read "<file>" (id 0)."""
        s = self.train if split == "train" else self.heldout
        pos = idx.long().unsqueeze(1) + 1 - torch.arange(self.context, 0, -1).unsqueeze(0)
        out = s[pos.clamp(min=0)].long()
        return torch.where(pos >= 0, out, torch.zeros_like(out))


def _cache_path(root: str, min_count: int, heldout_mod: int) -> str:
    key = f"{FORMAT}|{root}|{min_count}|{heldout_mod}|{os.sys.version}"
    h = hashlib.sha1(key.encode()).hexdigest()[:12]
    base = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    return os.path.join(base, "triton_softmax", f"pycode-{h}.pt")


def build(
    root: str | None = None, min_count: int = 1, heldout_mod: int = 50, context: int = 8
) -> PyCodeTask:
    """Tokenise the stdlib (or `root`), split by file, build the vocabulary; no cache."""
    if min_count < 1 or heldout_mod < 2 or context < 1:
        raise ValueError("need min_count >= 1, heldout_mod >= 2 and context >= 1")
    root, files = stdlib_files(root)
    train_toks: list[str] = []
    held_toks: list[str] = []
    n_train_files = n_held_files = 0
    for rel in files:
        try:
            with open(os.path.join(root, rel), encoding="utf-8") as fh:
                text = fh.read()
        except (UnicodeDecodeError, OSError):
            continue  # a few test files are deliberately not UTF-8
        held = zlib.crc32(rel.encode()) % heldout_mod == 0
        dest = held_toks if held else train_toks
        dest.append(FILE)
        dest.extend(tokenize(text))
        n_held_files += held
        n_train_files += not held
    counts = Counter(train_toks)
    counts.pop(FILE, None)
    kept = [t for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
    vocab = [FILE, UNK, *kept]
    ids = {t: i for i, t in enumerate(vocab)}
    train = torch.tensor([ids.get(t, 1) for t in train_toks], dtype=torch.int32)
    heldout = torch.tensor([ids.get(t, 1) for t in held_toks], dtype=torch.int32)
    cnt = torch.bincount(train.long(), minlength=len(vocab))
    unk_held = float((heldout == 1).float().mean()) if heldout.numel() else 0.0
    info = dict(
        root=root,
        min_count=min_count,
        heldout_mod=heldout_mod,
        context=context,
        train_files=n_train_files,
        heldout_files=n_held_files,
        train_tokens=int(train.numel()),
        heldout_tokens=int(heldout.numel()),
        heldout_unk_share=unk_held,
        top10_share=float(cnt.sort(descending=True).values[:10].sum() / cnt.sum()),
        singleton_classes=int((cnt == 1).sum()),
    )
    return PyCodeTask("pycode", vocab, cnt, train, heldout, context, info)


def pycode_task(
    root: str | None = None,
    min_count: int = 1,
    heldout_mod: int = 50,
    context: int = 8,
    cache: bool = True,
) -> PyCodeTask:
    """The task, from the cache under ~/.cache/triton_softmax/ when there (see module doc)."""
    root = root or sysconfig.get_paths()["stdlib"]
    path = _cache_path(root, min_count, heldout_mod)
    if cache and os.path.exists(path):
        st = torch.load(path, weights_only=False)
        return PyCodeTask(
            "pycode", st["vocab"], st["counts"], st["train"], st["heldout"], context, st["info"]
        )
    task = build(root, min_count, heldout_mod, context)
    if cache:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + f".tmp{os.getpid()}"
        torch.save(
            dict(
                vocab=task.vocab,
                counts=task.counts,
                train=task.train,
                heldout=task.heldout,
                info=task.info,
            ),
            tmp,
        )
        os.replace(tmp, path)
    task.info["context"] = context
    return task
