"""The accuracy benchmark: WordNet loader (on a fake WordNet in the real file format), the
teacher generator, and a reduced end-to-end run of bench.accuracy writing its records."""

from __future__ import annotations

import json
import math
import os
import random

import pytest
import torch

from triton_softmax.data import (
    WordNetNotFound,
    lemma_task,
    make_teacher_task,
    read_synsets,
    synset_task,
    tokenize,
)
from triton_softmax.data.wordnet import parse_data_line

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
REAL = "/usr/share/wordnet"

# Hand-written lines in the wndb(5WN) format: hex w_cnt (0a = 10 words), adjective markers,
# verb frames after the pointers, a multi-word lemma, and glosses with examples.
LINES = {
    "noun": [
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04424418 n 0000 "
        "| that which is perceived or known or inferred to have its own distinct existence  ",
        "00002137 03 n 02 abstraction 0 abstract_entity 0 001 @ 00001740 n 0000 "
        "| a general concept formed by extracting common features from specific examples  ",
    ],
    "verb": [
        "00204872 30 v 02 suffer 2 lose 3 002 $ 00204750 v 0000 @ 00203866 v 0000 03 + 01 00 "
        '+ 02 00 + 04 00 | be set at a disadvantage; "This author really suffers in '
        'translation"  '
    ],
    "adj": [
        "00020410 00 s 04 unapproachable 0 unreachable 0 unreached 0 out_of_reach(p) 0 001 "
        '& 00019874 a 0000 | inaccessibly located or situated; "an unapproachable chalet"  ',
        "00019731 00 s 0a w0 0 w1 0 w2 0 w3 0 w4 0 w5 0 w6 0 w7 0 w8 0 Handy(a) 0 000 "
        "| easy to reach  ",
    ],
    "adv": [
        '00516492 02 r 01 wrongfully 0 000 | in an unjust or unfair manner; "wrongfully '
        'dismissed"  '
    ],
}


def write_wordnet(root, lines: dict[str, list[str]]) -> str:
    os.makedirs(root, exist_ok=True)
    for pos, rows in lines.items():
        with open(os.path.join(root, f"data.{pos}"), "w") as fh:
            fh.write(HEADER)
            fh.write("".join(r + "\n" for r in rows))
    return str(root)


def fake_wordnet(root, num_synsets: int = 1200, seed: int = 0) -> str:
    """A larger WordNet-format directory: random glosses over a small vocabulary, lemmas
    drawn from a pool so that many have several senses."""
    rng = random.Random(seed)
    words = [f"w{c}{d}" for c in "abcdefghijklmnopqrstuvwxyz" for d in "abcdefghijklmnop"]
    words = ["".join(ch for ch in w if ch.isalpha()) for w in words]
    pool = [f"lemma{c}" for c in range(int(num_synsets * 0.8))]
    pool = ["".join(chr(97 + int(x)) for x in str(i)) + "_word" for i in range(len(pool))]
    rows: dict[str, list[str]] = {p: [] for p in ("noun", "verb", "adj", "adv")}
    for i in range(num_synsets):
        pos, ss = [("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")][i % 4]
        lem = rng.sample(pool, rng.randint(1, 3))
        gloss = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))
        ex = " ".join(rng.choice(words) for _ in range(3))
        fields = " ".join(f"{w} 0" for w in lem)
        frames = " 01 + 02 00" if pos == "verb" else ""
        rows[pos].append(
            f"{1000 + 37 * i:08d} 00 {ss} {len(lem):02x} {fields} 001 "
            f'@ 00001740 n 0000{frames} | {gloss}; "{ex}"  '
        )
    return write_wordnet(root, rows)


# ---- loader -------------------------------------------------------------------------------
def test_parse_lines(tmp_path):
    root = write_wordnet(tmp_path / "wn", LINES)
    syn = read_synsets(root)
    assert len(syn) == 6  # header skipped
    by_key = {s.key: s for s in syn}
    assert by_key["n00002137"].lemmas == ("abstraction", "abstract_entity")
    assert by_key["v00204872"].lemmas == ("suffer", "lose")
    assert by_key["v00204872"].gloss.startswith("be set at a disadvantage")
    assert by_key["s00020410"].lemmas[-1] == "out_of_reach"  # "(p)" marker dropped
    assert len(by_key["s00019731"].lemmas) == 10 and by_key["s00019731"].lemmas[-1] == "handy"
    assert tokenize('Be set; "This author" x2-y') == ["be", "set", "this", "author", "x", "y"]
    assert parse_data_line(HEADER) is None


def test_missing_files_error_names_package(tmp_path):
    write_wordnet(tmp_path / "wn", {"noun": LINES["noun"]})
    with pytest.raises(WordNetNotFound, match="wordnet-base") as info:
        read_synsets(tmp_path / "wn")
    assert "data.verb" in str(info.value)
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        synset_task(tmp_path / "nowhere")


def test_synset_task_bags(tmp_path):
    root = write_wordnet(tmp_path / "wn", LINES)
    task = synset_task(root)
    assert task.num_classes == 6 and task.train_labels.tolist() == list(range(6))
    ids, offsets = task.train.batch(torch.tensor([3, 0]))
    # bag 0 of the batch is synset 3's gloss, in order; the offsets start each bag
    syn = read_synsets(root)
    want3 = tokenize(syn[3].gloss)
    assert [task.vocab[i] for i in ids[: len(want3)]] == want3
    assert offsets.tolist() == [0, len(want3)]
    padded = task.train.padded(torch.tensor([0, 3]))
    assert padded.shape == (2, max(len(tokenize(syn[0].gloss)), len(want3)))
    bag = torch.nn.EmbeddingBag(len(task.vocab), 4, mode="mean")
    assert bag(ids, offsets).shape == (2, 4)
    sub = synset_task(root, max_classes=4, seed=1)
    assert sub.num_classes == 4


def test_lemma_task_heldout(tmp_path):
    root = fake_wordnet(tmp_path / "wn", 600)
    task = lemma_task(root, heldout_fraction=0.2, seed=0)
    held_sets, train_sets = task.heldout_label_sets, task.train_label_sets
    assert len(task.heldout) == task.info["heldout_synsets"] > 0
    # every class a held-out gloss should predict has a training example
    trained = set(task.train_labels.tolist())
    held = set(held_sets[held_sets >= 0].tolist())
    assert held <= trained
    # a training example's label is among its hit set; one example per (synset, lemma)
    assert (train_sets == task.train_labels.unsqueeze(1)).any(1).all()
    assert task.info["train_examples"] == task.train_labels.numel()
    # held-out glosses are whole synsets: none of their glosses is a training gloss
    train_bags = {
        tuple(task.train.padded(torch.tensor([i]))[0].tolist()) for i in range(len(task.train))
    }
    for i in range(len(task.heldout)):
        assert tuple(task.heldout.padded(torch.tensor([i]))[0].tolist()) not in train_bags


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(REAL, "data.noun")), reason="wordnet-base not installed"
)
def test_real_wordnet_counts():
    syn = read_synsets(REAL)
    assert len(syn) == 117_659
    assert len({lem for s in syn for lem in s.lemmas}) > 140_000


# ---- teacher ------------------------------------------------------------------------------
def test_teacher_task_bayes():
    t = make_teacher_task(
        num_classes=3000, dim=16, examples_per_class=2, heldout=2000, sigma=0.15, seed=3
    )
    assert t.train_x.shape == (6000, 16)
    assert torch.bincount(t.train_labels, minlength=3000).eq(2).all()  # balanced classes
    norms = t.means.norm(dim=1)
    assert norms.max() / norms.min() > 3  # unequal norms
    # the Bayes classifier is the teacher's argmax; it is what the estimate measures
    pred = t.teacher_argmax(t.heldout_x, batch=333, chunk=700)
    mu, s2 = t.means.double(), t.sigma**2
    x = t.heldout_x.double()
    log_post = -torch.cdist(x, mu).pow(2) / (2 * s2)  # Gaussian log-likelihood + const
    # float32 teacher vs float64 distances: identical but for near-ties
    assert (pred == log_post.argmax(1)).double().mean() > 0.999
    acc = (pred == t.heldout_labels).double().mean().item()
    assert t.bayes_accuracy == pytest.approx(acc)
    assert t.bayes_accuracy_se == pytest.approx(math.sqrt(acc * (1 - acc) / 2000))
    assert 0.0 < t.bayes_accuracy < 1.0
    # same seed, same task; less noise, higher Bayes accuracy
    t2 = make_teacher_task(
        num_classes=3000, dim=16, examples_per_class=2, heldout=2000, sigma=0.15, seed=3
    )
    assert torch.equal(t.train_x, t2.train_x) and t2.bayes_accuracy == t.bayes_accuracy
    easy = make_teacher_task(
        num_classes=3000, dim=16, examples_per_class=1, heldout=2000, sigma=0.01, seed=3
    )
    assert easy.bayes_accuracy > t.bayes_accuracy


# ---- end to end ---------------------------------------------------------------------------
def _check_records(out, task, labels):
    from bench.accuracy import load_records, summarise

    files = sorted(p for p in os.listdir(out) if p.startswith(f"accuracy-{task}-"))
    assert len(files) == len(labels)
    recs = load_records([os.path.join(out, f) for f in files])
    assert sorted(r["label"] for r in recs) == sorted(labels)
    for r in recs:
        assert r["device"]["kind"] == "cpu" and r["versions"]["torch"] == torch.__version__
        assert len(r["load_avg_start"]) == 3 and len(r["load_avg_end"]) == 3
        assert r["eval"]["exact"] and len(r["epoch_seconds"]) == r["config"]["epochs"]
        walls = [p["wall_s"] for p in r["curve"]]
        assert walls[0] == 0.0 and walls == sorted(walls) and walls[-1] == r["train_wall_s"]
        assert all(0.0 <= p["p1"] <= p["p5"] <= 1.0 for p in r["curve"])
        assert r["final"] == r["curve"][-1]
        assert (r["refresh"] is not None) == (r["method"] in ("faiss", "lsh"))
    # same seed and data order: every method starts from the same model
    starts = {(r["curve"][0]["p1"], r["curve"][0]["p5"]) for r in recs}
    assert len(starts) == 1
    rows = summarise(recs)
    full = next(x for x in rows if x["method"] == "full")
    assert full["rel_p1"] == pytest.approx(1.0)
    assert all("t95_s" in x for x in rows)
    return recs


def test_end_to_end_all_methods(tmp_path, monkeypatch):
    from bench import accuracy

    root = fake_wordnet(tmp_path / "wn", 900)
    out = tmp_path / "results"
    labels = ["full", "faiss@2", "lsh@2", "lsh@50", "uniform"]
    accuracy.main(
        [
            "--task",
            "wordnet-synset",
            "--wordnet-dir",
            root,
            "--methods",
            "full,faiss@2,lsh@2,lsh@50,uniform",
            "--epochs",
            "1",
            "--batch-size",
            "256",
            "--num-candidates",
            "16",
            "--num-uniform",
            "16",
            "--eval-examples",
            "500",
            "--out",
            str(out),
            "--no-progress",
            "--threads",
            "2",
        ]
    )
    recs = _check_records(out, "wordnet-synset", labels)
    by = {r["label"]: r for r in recs}
    assert by["lsh@2"]["refresh"]["count"] > by["lsh@50"]["refresh"]["count"] >= 1
    assert by["uniform"]["data"]["num_classes"] == 900

    from plots import accuracy as plot

    written = plot.main(["--results", str(out), "--out", str(tmp_path / "png")])
    assert len(written) == 1 and os.path.getsize(written[0]) > 10_000
    # a second session (say, other refresh intervals) summarised against the first's full run
    session = recs[0]["session"]
    for r in recs:
        if r["label"] == "lsh@2":
            other = dict(r, session="later", label="lsh@3")
            (out / "accuracy-wordnet-synset-lsh-r3-later.json").write_text(json.dumps(other))
    rows = []
    summarise = plot.summarise
    monkeypatch.setattr(plot, "summarise", lambda rs: rows.extend(summarise(rs)) or rows)
    written = plot.main(
        ["--results", str(out), "--session", session, "later", "--out", str(tmp_path / "p2")]
    )
    assert written[0].endswith(f"accuracy-wordnet-synset-{session}+later.png")
    later = [r for r in rows if r["label"] == "lsh@3"]
    assert later and later[0]["full_final_p1"] == by["full"]["final"]["p1"]


def test_end_to_end_lemma_and_teacher(tmp_path):
    from bench import accuracy

    root = fake_wordnet(tmp_path / "wn", 500)
    out = tmp_path / "results"
    accuracy.main(
        [
            "--task",
            "wordnet-lemma",
            "--wordnet-dir",
            root,
            "--methods",
            "full,uniform",
            "--epochs",
            "1",
            "--batch-size",
            "256",
            "--num-candidates",
            "8",
            "--num-uniform",
            "8",
            "--eval-examples",
            "300",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    recs = _check_records(out, "wordnet-lemma", ["full", "uniform"])
    assert all("heldout_p1" in r["final"] and r["eval"]["heldout_examples"] > 0 for r in recs)
    accuracy.main(
        [
            "--task",
            "teacher",
            "--max-classes",
            "2000",
            "--teacher-dim",
            "16",
            "--examples-per-class",
            "2",
            "--methods",
            "full,lsh",
            "--epochs",
            "1",
            "--batch-size",
            "256",
            "--num-candidates",
            "16",
            "--num-uniform",
            "16",
            "--eval-examples",
            "400",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    recs = _check_records(out, "teacher", ["full", "lsh@100"])
    for r in recs:
        assert 0.0 < r["data"]["bayes_accuracy"] < 1.0
        with open(
            os.path.join(
                out, f"accuracy-teacher-{r['label'].replace('@', '-r')}-{r['session']}.json"
            )
        ) as fh:
            assert json.load(fh)["session"] == r["session"]


def test_lsh_recall_probe(tmp_path):
    from bench import lsh_recall_trained

    root = fake_wordnet(tmp_path / "wn", 64)
    rec = lsh_recall_trained.main(
        [
            "--wordnet-dir",
            root,
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--queries",
            "50",
            "--bits",
            "1,5",
            "--tables",
            "6",
            "--reads",
            "8,64",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert rec["num_classes"] == 64
    assert [(g["bits"], g["reads"]) for g in rec["grid"]] == [(1, 8), (1, 64), (5, 8), (5, 64)]
    for g in rec["grid"]:
        assert 0.0 <= g["recall_top32"] <= 1.0 and 0.0 < g["filled"] <= 1.0
    # 1 bit x 6 tables, every bucket read whole: the union is (almost surely) all 64 classes
    # and 63 candidates leave out at most one hard negative of 32
    assert rec["grid"][1]["recall_top32"] >= 31 / 32 - 1e-6
    cos = rec["cosines"]
    assert -1.0 <= cos["hard_negatives_median"] <= 1.0 and -1.0 <= cos["target_median"] <= 1.0
    (path,) = (tmp_path / "r").glob("lsh_recall_trained-*.json")
    assert json.loads(path.read_text())["grid"] == rec["grid"]


def test_summarise_time_limited_full_is_no_reference():
    from bench.accuracy import format_table, summarise

    def rec(method, p1, steps, wall, stopped=None, session="s"):
        curve = [
            dict(epoch=0.0, step=0, wall_s=0.0, p1=0.0, p5=0.0),
            dict(epoch=steps / 100, step=steps, wall_s=wall, p1=p1, p5=p1),
        ]
        return dict(
            session=session,
            task="teacher",
            label=method,
            method=method,
            refresh_every=None,
            epoch_seconds=[wall],
            final=curve[-1],
            curve=curve,
            train_wall_s=wall,
            load_avg_start=[1.0],
            load_avg_end=[1.0],
            refresh=None,
            steps=steps,
            steps_per_epoch=100,
            stopped=stopped,
        )

    rows = summarise([rec("full", 0.01, 5, 50.0, "time_limit"), rec("lsh", 0.3, 300, 30.0)])
    full, lsh = rows
    assert full["stopped"] == "time_limit" and full["epochs"] == pytest.approx(0.05)
    assert full["sec_per_epoch"] == pytest.approx(1000.0)  # 50 s for 5 of 100 steps
    assert lsh["epochs"] == pytest.approx(3.0) and lsh["sec_per_epoch"] == pytest.approx(10.0)
    assert "rel_p1" not in lsh and "t95_s" not in lsh
    assert "(stopped: time_limit)" in format_table(rows)
    # a complete full run is the reference
    rows = summarise([rec("full", 0.5, 100, 100.0), rec("lsh", 0.3, 300, 30.0)])
    assert rows[1]["rel_p1"] == pytest.approx(0.6)


def test_budget_gaps_compare_step_functions_at_every_evaluation_time():
    from bench.accuracy import budget_gaps, p1_at

    def run(points):
        return {"curve": [{"wall_s": t, "p1": p} for t, p in points]}

    ours = run([(0, 0.0), (30, 0.2), (60, 0.9), (90, 0.95)])
    base = run([(0, 0.0), (20, 0.3), (50, 0.5), (80, 0.6)])
    assert p1_at(ours["curve"], 59) == 0.2 and p1_at(ours["curve"], 500) == 0.95
    assert p1_at(base["curve"], 10) == 0.0
    gaps = budget_gaps(ours, base)
    # at 20 s the baseline has 0.3, ours still 0.0; at 30 s and 50 s ours 0.2 < 0.3 / 0.5
    assert [g["wall_s"] for g in gaps] == [20, 30, 50]
    assert gaps[-1] == {"wall_s": 50, "p1": 0.2, "other_p1": 0.5}
    assert budget_gaps(base, base) == [] and budget_gaps(run([(0, 1.0)]), base) == []


def test_auto_target_share_and_lsh_nprobe_are_the_runs_own(tmp_path, monkeypatch):
    """--auto-target-share sets method="auto"'s share for its runs only (the label says it, the
    recorded goal is that share of the ceiling, the constant is back afterwards);
    --lsh-nprobe sets the lists an lsh search reads (the label says it). A crossover table
    where lsh beats the exact path from n = 500, so auto measures its quality at n = 900."""
    from bench import accuracy
    from triton_softmax import dispatch, functional

    table = {"format": "triton_softmax.crossovers/1", "devices": {"cpu": {"source": "test",
             "entries": [dict(d=128, N=256, dtype="float32", lsh=500, faiss=600)]}}}  # fmt: skip
    path = tmp_path / "cache" / "triton_softmax" / "crossovers.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(table))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(functional, "_CHOICES", {})

    root = fake_wordnet(tmp_path / "wn", 900)
    common = ["--task", "wordnet-synset", "--wordnet-dir", root, "--epochs", "1",
              "--batch-size", "256", "--num-candidates", "16", "--num-uniform", "16",
              "--eval-examples", "200", "--no-progress", "--threads", "1"]  # fmt: skip
    before = dispatch.AUTO_TARGET_SHARE
    out = tmp_path / "share"
    (rec,) = accuracy.main([*common, "--methods", "auto", "--auto-target-share", "0.2",
                            "--out", str(out)])  # fmt: skip
    assert dispatch.AUTO_TARGET_SHARE == before != 0.2
    assert rec["label"].endswith("-share0.2") and "0.2 of the exact top-15 mass" in rec["explain"]
    (rec,) = accuracy.main([*common, "--methods", "lsh", "--lsh-nprobe", "3",
                            "--out", str(tmp_path / "np")])  # fmt: skip
    assert rec["label"].endswith("-np3") and rec["config"]["lsh_nprobe"] == 3
    with pytest.raises(SystemExit, match="auto-target-share"):
        accuracy.main([*common, "--methods", "auto", "--auto-target-share", "1.5"])


def test_sampler_and_num_head_are_the_runs_own(tmp_path):
    """--sampler / --num-head reach the module (its explain says so) and the label names them;
    without them the run has the library's default head (H in the label)."""
    from bench import accuracy

    root = fake_wordnet(tmp_path / "wn", 900)
    common = ["--task", "wordnet-synset", "--wordnet-dir", root, "--epochs", "1",
              "--batch-size", "256", "--num-candidates", "16", "--num-uniform", "16",
              "--eval-examples", "200", "--no-progress", "--threads", "1", "--methods", "faiss",
              "--candidate-scheme", "auto"]  # fmt: skip
    (rec,) = accuracy.main([*common, "--out", str(tmp_path / "d")])
    assert rec["label"].endswith("-T84-H28"), rec["label"]  # 112 = 900 // 8 columns, a quarter
    assert "an exact head of the 28 classes" in rec["explain"]
    (rec,) = accuracy.main([*common, "--sampler", "uniform", "--out", str(tmp_path / "u")])
    assert rec["label"].endswith("-T112-quniform") and "weight n / |T|" in rec["explain"]
    (rec,) = accuracy.main([*common, "--num-head", "12", "--out", str(tmp_path / "h")])
    assert rec["label"].endswith("-T100-H12") and "head of the 12 classes" in rec["explain"]
