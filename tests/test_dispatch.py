"""method="auto": table lookups, fallbacks, explain(), tune command."""

import json

import pytest
import torch

import triton_softmax.dispatch as dispatch
from triton_softmax import SampledSoftmaxLoss
from triton_softmax.dispatch import TABLE_FORMAT, choose_method, load_table
from triton_softmax.tune import crossover, crossovers_from_records
from triton_softmax.tune import main as tune_main

TABLE = {
    "format": TABLE_FORMAT,
    "devices": {
        "cpu": {
            "source": "records bench/results/test.jsonl",
            "entries": [
                {"d": 128, "N": 256, "dtype": "float32", "lsh": 20_000, "faiss": 80_000},
                {"d": 512, "N": 2048, "dtype": "float32", "lsh": 50_000, "faiss": None},
            ],
        }
    },
}
CPU = torch.device("cpu")


def choose(n, d=128, N=256, **kw):
    return choose_method("auto", n, d, N, torch.float32, CPU, 64, 64, table=TABLE, **kw)


@pytest.mark.parametrize(
    "n,expect", [(10_000, "full"), (19_999, "full"), (20_000, "lsh"), (10**6, "lsh")]
)
def test_choice_follows_the_crossover(n, expect):
    c = choose(n)
    assert c.method == expect
    assert "20000" in c.reason and "bench/results/test.jsonl" in c.reason


def test_nearest_entry_is_used():
    assert choose(40_000, d=512, N=2048).method == "full"  # that entry's lsh crossover: 50K
    assert choose(60_000, d=512, N=2048).method == "lsh"
    assert choose(40_000, d=100, N=300).method == "lsh"  # nearest to (128, 256)


def test_faiss_chosen_when_it_crosses_first(monkeypatch):
    table = json.loads(json.dumps(TABLE))
    table["devices"]["cpu"]["entries"][0]["faiss"] = 5_000
    c = choose_method("auto", 10_000, 128, 256, torch.float32, CPU, 64, 64, table=table)
    assert c.method == "faiss"
    monkeypatch.setattr(dispatch, "faiss_available", lambda: False)
    monkeypatch.setattr(dispatch, "FAISS_IMPORT_ERROR", "ImportError: no faiss")
    c = choose_method("auto", 30_000, 128, 256, torch.float32, CPU, 64, 64, table=table)
    assert c.method == "lsh" and "faiss unavailable" in c.reason and "no faiss" in c.explain()
    with pytest.raises(ImportError, match="faiss"):
        choose_method("faiss", 30_000, 128, 256, torch.float32, CPU, 64, 64, table=table)


def test_degenerate_exact_and_smoothing_choose_full():
    assert "saves nothing" in choose(100).reason
    assert choose(10**6, exact=True).method == "full"
    assert choose(10**6, label_smoothing=0.1).method == "full"
    with pytest.raises(ValueError, match="label_smoothing"):
        choose_method("lsh", 10**6, 128, 256, torch.float32, CPU, 64, 64, label_smoothing=0.1)


def test_unknown_device_class_falls_back_to_full():
    empty = {"format": TABLE_FORMAT, "devices": {}}
    c = choose_method("auto", 10**7, 128, 256, torch.float32, CPU, 64, 64, table=empty)
    assert c.method == "full" and "no crossover measured" in c.reason


def test_corrupt_or_foreign_cache_file_is_ignored_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = tmp_path / "triton_softmax" / "crossovers.json"
    path.parent.mkdir(parents=True)
    for content in (
        "{not json",
        json.dumps({"format": "someone-else/9", "devices": {}}),
        json.dumps({"format": TABLE_FORMAT, "devices": {"cpu": {"entries": [{}]}}}),
    ):
        path.write_text(content)
        with pytest.warns(UserWarning, match="ignoring crossover table"):
            table = load_table()
        assert table["_path"].endswith("default.json")
    path.write_text(json.dumps(TABLE))
    assert load_table()["_path"] == str(path)


def test_crossover_interpolation():
    assert crossover([10, 100, 1000], [1, 10, 100], [5, 10, 20]) == pytest.approx(100)
    assert crossover([10, 100], [1, 2], [3, 4]) is None
    assert crossover([10, 100], [2, 3], [1, 1]) == 10
    x = crossover([100, 1000], [1.0, 10.0], [2.0, 5.0])
    assert 100 < x < 1000


def test_tune_command_end_to_end_at_tiny_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rc = tune_main(
        [
            "--d",
            "8",
            "--N",
            "4",
            "--n",
            "300",
            "3000",
            "--repeats",
            "1",
            "--num-candidates",
            "16",
            "--num-uniform",
            "8",
        ]
    )
    assert rc == 0
    table = load_table()
    assert table["_path"].startswith(str(tmp_path))
    (entry,) = table["devices"]["cpu"]["entries"]
    assert entry["d"] == 8 and entry["N"] == 4 and entry["measured_n"] == [300, 3000]
    assert "lsh_topk" in entry and "faiss_topk" in entry  # inference crossovers measured too
    assert "tune run" in table["devices"]["cpu"]["source"]


def test_table_from_records(tmp_path):
    recs = [
        dict(method=m, n=n, d=128, N=256, dtype="float32", median_ms=t, status="ok")
        for m, n, t in [
            ("full", 1000, 1.0),
            ("full", 10000, 10.0),
            ("lsh", 1000, 5.0),
            ("lsh", 10000, 5.0),
            ("faiss", 1000, 50.0),
            ("faiss", 10000, 40.0),
        ]
    ]
    (e,) = crossovers_from_records(recs)
    assert 1000 < e["lsh"] < 10000 and e["faiss"] is None


def test_module_explain_and_cached_choice():
    layer = SampledSoftmaxLoss(10**6, 8, num_candidates=64, num_uniform=64)
    text = layer.explain(batch=256)
    assert text.startswith("method=") and "n=1000000" in text and "looked at" in text
    assert layer.choice(256) is layer.choice(256)
    small = SampledSoftmaxLoss(100, 8, num_candidates=64, num_uniform=64)
    assert "sampling saves nothing" in small.explain()


def test_inference_uses_its_own_crossover_or_says_it_has_none():
    table = json.loads(json.dumps(TABLE))
    entry = table["devices"]["cpu"]["entries"][0]
    c = choose_method(
        "auto", 30_000, 128, 256, torch.float32, CPU, 64, 64, table=table, inference=True
    )
    assert c.method == "lsh" and "no inference crossover measured" in c.reason
    entry["lsh_topk"], entry["faiss_topk"] = 50_000, None
    c = choose_method(
        "auto", 30_000, 128, 256, torch.float32, CPU, 64, 64, table=table, inference=True
    )
    assert c.method == "full" and "50000" in c.reason


def test_auto_ranks_the_paths_past_their_crossover_by_their_time_at_n():
    # lsh crosses first (below 1e4) but faiss is faster from 1e5 on: the table's times decide
    ms = {"full": [1.0, 10.0, 100.0, 1000.0], "lsh": [30.0, 8.0, 60.0, 120.0]}
    ms["faiss"] = [90.0, 60.0, 40.0, 50.0]
    recs = [
        dict(method=m, n=10 ** (3 + i), d=128, N=256, dtype="float32", median_ms=t, status="ok")
        for m, times in ms.items()
        for i, t in enumerate(times)
    ]
    (e,) = crossovers_from_records(recs)
    assert e["lsh"] < e["faiss"] and e["ms"]["faiss"] == [90.0, 60.0, 40.0, 50.0]
    table = {"format": TABLE_FORMAT, "devices": {"cpu": {"source": "t", "entries": [e]}}}
    dispatch.validate_table(table)
    pick = {
        n: choose_method("auto", n, 128, 256, torch.float32, CPU, 64, 64, table=table)
        for n in (3 * 10**4, 10**5, 10**6)
    }
    assert pick[3 * 10**4].method == "lsh"  # below faiss's crossover: lsh alone
    assert pick[10**5].method == "faiss" and pick[10**5].ranked == ("faiss", "lsh", "full")
    assert pick[10**6].method == "faiss" and "faiss ~50 ms, lsh ~120 ms" in pick[10**6].reason
    assert dispatch.time_at(e, "lsh", 3 * 10**5) == pytest.approx(60 * 3**0.30103, rel=1e-6)
    # a table without times keeps the crossover order
    del e["ms"]
    assert (
        choose_method("auto", 10**6, 128, 256, torch.float32, CPU, 64, 64, table=table).method
        == "lsh"
    )
    with pytest.raises(ValueError, match="ms"):
        dispatch.validate_table(
            {
                "format": TABLE_FORMAT,
                "devices": {
                    "cpu": {
                        "entries": [
                            dict(d=1, N=1, dtype="float32", measured_n=[1, 2], ms={"lsh": [1.0]})
                        ]
                    }
                },
            }
        )
