"""The project names its own history by dates, versions and commit ids only: no label of an
internal work period (the word for a work period and its number, or a short tag of the letter
s, a number and a word) and no tracker number in any tracked file or file name. The examples
below are assembled from pieces so that this file passes its own test."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# the work-period word with its number (also hyphenated, plural); a tracker word with its number
TEXT_LABELS = re.compile(
    r"\bsessions?[ -]?\d{1,2}\b|\bissue[ -]?#?\d{1,3}\b|\bissues \d{1,3}\b", re.IGNORECASE
)
# a work-period tag: s, a number and a word; or s and a number as one part of a name
TAG = re.compile(r"(?<![A-Za-z0-9])s\d{1,2}[a-z]+\d*(?![A-Za-z0-9])|(?<=[-_+])s\d{1,2}(?=$|[-_+.])")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [f for f in out.split("\0") if f]


def labels_in(text: str, *, tags: bool) -> list[str]:
    found = [m.group(0) for m in TEXT_LABELS.finditer(text)]
    if tags:
        found += [m.group(0) for m in TAG.finditer(text)]
    return found


def test_the_patterns_catch_labels_and_spare_ordinary_words():
    w, t, s = "session", "issue", "s"
    labels = (f"{w} 9", f"{w.title()}-10", f"{w}s 5 and 6", f"{t} 18", f"{t} #20", f"{t}18")
    for bad in labels:
        assert labels_in(bad, tags=False), bad
    tags = (f"x-{s}10ivfpq.json", f"gpu-h200-20261130-{s}9-smoke", f"a_{s}10.jsonl", f"{s}5pair+")
    for bad in tags:
        assert labels_in(bad, tags=True), bad
    for ok in (f"--{w} 20261127-024000", f"{s}2, i2 = exact_topk(", f"{s}00020410", f"{t}s"):
        assert not labels_in(ok, tags=True), ok


def test_no_label_in_file_names():
    bad = [f for f in tracked_files() if labels_in(f, tags=True)]
    assert not bad, f"file names with internal labels: {bad[:20]}"


def test_no_label_in_tracked_text():
    bad = []
    for f in tracked_files():
        path = ROOT / f
        if not path.is_file() or path.suffix in {".png", ".whl", ".pt", ".gz", ".tgz"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            hits = labels_in(line, tags=True)
            if hits:
                bad.append(f"{f}:{i}: {hits}")
    assert not bad, "internal labels:\n" + "\n".join(bad[:40])
