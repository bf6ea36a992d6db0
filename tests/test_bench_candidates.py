"""bench/candidates.py end to end on a tiny planted problem (the frontier's record format)."""

from __future__ import annotations

import json

from bench import candidates


def test_candidates_planted_writes_a_record(tmp_path):
    rec = candidates.main(
        [
            "--problem",
            "planted",
            "--n",
            "3000",
            "--dim",
            "16",
            "--queries",
            "64",
            "--only",
            "uniform,today,faiss flat,clusters spherical lists=55 nprobe=8",
            "--out",
            str(tmp_path),
        ]
    )
    files = list(tmp_path.glob("candidates-planted-n3000-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["device"]["kind"] == "cpu"
    rows = {r["name"]: r for r in rec["rows"]}
    for r in rows.values():
        assert 0.0 <= r["recall_top32"] <= 1.0 and 0.0 <= r["mass"] <= 1.0 + 1e-6
        assert 0.0 < r["fraction_scored"] <= 1.0 and r["search_ms_per_1024"] >= 0
    flat = rows["faiss flat"]
    assert flat["recall_top32"] > 0.99  # exact top-63 holds the exact top-32
    assert rows["uniform"]["recall_top32"] < 0.2
    # the exact top-63 captures the most mass any 63 ids can
    assert all(r["mass"] <= flat["mass"] + 1e-5 for r in rows.values())
    assert rec["geometry"]["norm_cv"] > 0
