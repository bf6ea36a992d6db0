"""The docs' figures come from the committed records through one command: `python3 -m
bench.report` writes docs/*.md and the README's headline tables from bench/results/MANIFEST.json
and the records it lists. The committed docs must be exactly what it writes, and the manifest
must list exactly the records that are there."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from bench import report

ROOT = Path(__file__).resolve().parents[1]


def test_committed_docs_are_what_bench_report_writes():
    stale = [
        str(path.relative_to(ROOT))
        for path, text in report.outputs().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"run `python3 -m bench.report` and commit: {stale}"


def _committed_records() -> set[str]:
    """Top-level names under bench/results/ that git tracks (a sweep the user just ran writes
    its record there too: it is not a committed record until it is added)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "bench/results"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    names = {Path(f).relative_to("bench/results").parts[0] for f in out.split()}
    return names - {"MANIFEST.json"}


def test_the_manifest_lists_exactly_the_committed_records():
    listed = [e["file"] for e in report.manifest()]
    assert len(listed) == len(set(listed))
    assert set(listed) == _committed_records()
    assert all((report.RESULTS / name).exists() for name in listed)
    for e in report.manifest():
        assert e["what"] and e["machine"] and e["command"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", e["date"]), e


def test_report_reads_only_listed_records():
    with pytest.raises(KeyError, match="MANIFEST"):
        report.load("not-a-record.json")


def test_readme_is_short_and_ci_runs_its_test_command():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert "bash scripts/install.sh && python3 -m pytest -q" in readme
    assert "bash scripts/install.sh && python3 -m bench.sweep --quick" in readme
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == "bash scripts/install.sh && python3 -m pytest -q"
