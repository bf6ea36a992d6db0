"""Each example's --quick run, as a user runs it: a subprocess from outside the checkout,
writing its plot and JSON record to a temporary --out.

The timeouts bound a loaded machine: on an idle 2-core CPU each quick run takes about 15 to
40 s (mostly process start, imports and, for the WordNet examples, reading WordNet).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORDNET = Path("/usr/share/wordnet/data.noun").is_file()
pytestmark = pytest.mark.slow


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _run(script: str, out: Path, *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--quick", "--out", str(out), *extra],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pngs = list(out.glob("*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 10_000, pngs
    assert f"plot: {pngs[0]}" in proc.stdout
    assert "%|" in proc.stderr  # the tqdm bar ran
    return proc.stdout


@pytest.mark.skipif(not _has("transformers"), reason="needs the hf extra (transformers)")
def test_hf_causal_lm_quick(tmp_path):
    out = _run("hf_causal_lm.py", tmp_path)
    lines = {l.split(":")[0]: l for l in out.splitlines() if "held-out loss" in l}
    assert set(lines) == {"hf", "full", "lsh"}
    # the patched exact path trains like the unpatched model (same loss, same gradients)
    end = {k: float(v.rsplit("-> ", 1)[1]) for k, v in lines.items()}
    start = {k: float(v.split("held-out loss ")[1].split(" ")[0]) for k, v in lines.items()}
    assert abs(end["hf"] - end["full"]) < 1e-2, lines
    assert end["lsh"] < start["lsh"] - 1.0, lines  # the sampled path trains
    assert list(tmp_path.glob("hf-lm-*.json"))


def test_sasrec_quick(tmp_path):
    out = _run("sasrec.py", tmp_path)
    assert "catalogue n=100,000" in out
    assert out.count("held-out cross-entropy") >= 3  # the floor line + one per method
    assert list(tmp_path.glob("sasrec-*.json"))


@pytest.mark.skipif(not WORDNET, reason="needs WordNet (Debian wordnet-base)")
def test_wordnet_xc_quick(tmp_path):
    out = _run("wordnet_xc.py", tmp_path)
    assert "wordnet-synset: 3000 classes" in out
    assert "full: P@1" in out and "lsh@10: P@1" in out
    assert len(list(tmp_path.glob("accuracy-wordnet-synset-*.json"))) == 2
