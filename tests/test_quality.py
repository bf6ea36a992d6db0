"""target_mass and method="auto"'s quality rule (quality.py, index/quality.py).

The planted problem: 40 tight groups of 50 rows; a query near a row of a group has the
group's other rows as its largest non-target logits, so a candidate set that finds the
group captures most of the non-target softmax mass, and the clusters generator's lists find
groups (widening nprobe adds more of them). The flat problem: random rows and queries at a
small scale, where no 63 ids hold half of the mass.
"""

import functools
import json
import math

import pytest
import torch
from helpers_schemes import train_losses

from triton_softmax import SampledSoftmaxLoss, functional, quality
from triton_softmax.dispatch import AUTO_TARGET_SHARE, Choice, choose_by_quality
from triton_softmax.index.clusters import ClusterIndex
from triton_softmax.index.quality import (
    captured_mass,
    lse_without_target,
    probe_ladder,
    tune_probes,
)
from triton_softmax.options import IndexOptions

N_CLASSES, DIM, S = 2000, 16, 64


def planted(seed=0, rows=64):
    g = torch.Generator().manual_seed(seed)
    cent = torch.nn.functional.normalize(torch.randn(40, DIM, generator=g), dim=1)
    W = cent.repeat_interleave(N_CLASSES // 40, 0) + 0.3 * torch.randn(N_CLASSES, DIM, generator=g)
    y = torch.randint(N_CLASSES, (rows,), generator=g)
    h = 6 * W[y] + 0.5 * torch.randn(rows, DIM, generator=g)
    return W, h, y


def flat(seed=0, rows=64):
    g = torch.Generator().manual_seed(seed)
    W = 0.1 * torch.randn(N_CLASSES, DIM, generator=g)
    return W, torch.randn(rows, DIM, generator=g), torch.randint(N_CLASSES, (rows,), generator=g)


def layer_for(W, **kw):
    # the search from step 0 unless a test sets search_min_mass (the gate is tested apart)
    kw = dict(dict(num_candidates=S, num_uniform=S, refresh_every=5, search_min_mass=None), **kw)
    return SampledSoftmaxLoss(weight=torch.nn.Parameter(W.clone()), **kw)


def mass_of(ids, h, W, y):
    return float(captured_mass(ids, h, W, None, y, lse_without_target(h, W, None, y)).mean())


@pytest.fixture
def fast_table(tmp_path, monkeypatch):
    """A crossover table where lsh, then faiss, beat the exact path from n = 500 on (so
    method="auto" ranks lsh, faiss, full at n = 2000), and a fresh choice cache."""
    table = {
        "format": "triton_softmax.crossovers/1",
        "devices": {
            "cpu": {
                "source": "test table",
                "entries": [dict(d=DIM, N=64, dtype="float32", lsh=500, faiss=1000)],
            }
        },
    }
    path = tmp_path / "triton_softmax" / "crossovers.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(table))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(functional, "_CHOICES", {})


# ---- (a) validation --------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, 0.0, 1, 1.0, -0.5, 1.5, True, "0.5", float("nan")])
def test_target_mass_must_be_in_the_open_unit_interval(bad):
    with pytest.raises(ValueError, match="target_mass"):
        IndexOptions(target_mass=bad)
    with pytest.raises(ValueError, match="target_mass"):
        SampledSoftmaxLoss(100, 8, target_mass=bad)


def test_target_mass_is_for_sampled_paths_and_unsharded_modules():
    assert IndexOptions(target_mass=0.9).target_mass == 0.9
    assert SampledSoftmaxLoss(100, 8, method="lsh", target_mass=0.25).target_mass == 0.25
    for method in ("full", "uniform"):
        with pytest.raises(ValueError, match="target_mass"):
            SampledSoftmaxLoss(100, 8, method=method, target_mass=0.5)
    with pytest.raises(ValueError, match="target_mass cannot be used with a shard"):
        SampledSoftmaxLoss(100, 8, group=None, bounds=[(0, 100)], target_mass=0.5)


# ---- the measure ---------------------------------------------------------------------------
def test_captured_mass_against_a_direct_softmax():
    W, h, y = planted(rows=8)
    b = torch.randn(N_CLASSES)
    ids = torch.randint(-1, N_CLASSES, (8, 30))
    ids[:, 0] = y  # the target is never counted
    ids[:, 1] = ids[:, 2]  # a duplicate counts once
    p = torch.softmax((h @ W.T + b).double(), dim=1)
    want = []
    for i in range(8):
        keep = {int(j) for j in ids[i] if j >= 0 and j != y[i]}
        want.append(float(sum(p[i, j] for j in keep) / (1 - p[i, y[i]])))
    lse = lse_without_target(h, W, b, y, chunk=300)  # several class blocks
    got = captured_mass(ids, h, W, b, y, lse)
    assert torch.allclose(got.double(), torch.tensor(want, dtype=torch.float64), atol=1e-5)


# ---- (b) the clusters generator holds the target with the smallest rung ---------------------
@pytest.mark.parametrize("target", [0.6, 0.85])
def test_refresh_sets_the_smallest_nprobe_that_meets_the_target(target):
    W, h, y = planted()
    layer = layer_for(W, method="lsh", target_mass=target)
    layer(h, y).backward()
    st = layer.stats()
    assert st["target_mass"] == target and st["target_met"] is True
    assert st["captured_mass"] >= target and st["probe_rows"] == 64
    assert st["probe_seconds"] > 0 and st["captured_mass_index"] == "lsh"
    # recompute the ladder on a separate index built the same way
    index = ClusterIndex(DIM, seed=layer.seed).build(W)
    ladder = probe_ladder(index)
    assert ladder[0] == 1 and ladder[-1] == index.centroids.shape[0]
    masses = {}
    for p in ladder:
        index.set_nprobe(p)
        gen = torch.Generator().manual_seed(0)  # the probe's padding draws
        masses[p] = mass_of(index.search(h, S - 1, gen), h, W, y)
    smallest = min(p for p in ladder if masses[p] >= target)
    assert smallest > 1  # the default-less ladder had to widen
    assert st["nprobe"] == smallest == layer.index.nprobe
    assert st["captured_mass"] == pytest.approx(masses[smallest], abs=1e-6)


def test_an_unreachable_target_keeps_the_widest_setting_and_says_so():
    W, h, y = planted()
    layer = layer_for(W, method="lsh", target_mass=0.99)
    layer(h, y).backward()
    st = layer.stats()
    assert st["target_met"] is False and st["nprobe"] == layer.index.centroids.shape[0]
    assert "NOT met at the widest setting" in layer.explain(64)


def test_simhash_tables_are_measured_not_tuned():
    W, h, y = planted()
    layer = layer_for(W, method="lsh", lsh_generator="tables", target_mass=0.5)
    layer(h, y).backward()
    st = layer.stats()
    assert st["nprobe"] is None and 0 <= st["captured_mass"] < 1
    ids = layer.index.search(h, S - 1)
    assert st["captured_mass"] == pytest.approx(mass_of(ids, h, W, y), abs=1e-6)


def test_faiss_ivf_nprobe_is_tuned():
    pytest.importorskip("faiss")
    W, h, y = planted()
    layer = layer_for(W, method="faiss", faiss_index="ivf", faiss_nlist=40, target_mass=0.85)
    layer(h, y).backward()
    st = layer.stats()
    r = tune_probes(layer.index, h, W, None, y, S - 1, 0.85)  # the same ladder again
    assert st["nprobe"] == r["nprobe"] and st["target_met"] == r["met"]
    assert st["nprobe"] in probe_ladder(layer.index)


# ---- (c) method="auto" chooses by measured quality -------------------------------------------
def test_choose_by_quality_never_takes_a_faster_path_below_the_target():
    speed = Choice("lsh", "speed", {}, ("lsh", "faiss", "full"))
    assert choose_by_quality(speed, {"lsh": 0.6}, 0.5).method == "lsh"
    c = choose_by_quality(speed, {"lsh": 0.4, "faiss": 0.7}, 0.5)
    assert c.method == "faiss" and "lsh (faster) misses the target" in c.reason
    c = choose_by_quality(speed, {"lsh": 0.4, "faiss": 0.45}, 0.5)
    assert c.method == "full" and "exact" in c.reason
    no_full = Choice("lsh", "memory", {}, ("lsh", "faiss"))
    c = choose_by_quality(no_full, {"lsh": 0.3, "faiss": 0.2}, 0.5)
    assert c.method == "lsh" and "full does not fit" in c.reason


def test_auto_keeps_lsh_where_it_meets_the_target(fast_table):
    W, h, y = planted()
    layer = layer_for(W)  # method="auto", target AUTO_TARGET_SHARE of the ceiling
    assert layer.speed_choice(64).ranked == ("lsh", "faiss", "full")
    layer(h, y).backward()
    st = layer.stats()
    assert layer.choice(64).method == "lsh" and st["auto_choice"] == "lsh"
    assert st["target_mass"] == AUTO_TARGET_SHARE and st["target_relative"]
    assert 0 < st["mass_ceiling"] <= 1 and st["mass_goal"] == AUTO_TARGET_SHARE * st["mass_ceiling"]
    assert st["auto_masses"]["lsh"] >= st["mass_goal"]
    assert "faiss" not in st["auto_masses"]  # slower paths are not measured
    assert f"lsh is the fastest with mass >= {st['mass_goal']:.3g}" in layer.explain(64)


def test_auto_falls_back_to_faiss_when_lsh_misses(fast_table):
    pytest.importorskip("faiss")
    W, h, y = planted()
    layer = layer_for(W, lsh_generator="tables", target_mass=0.6)  # collision-count ranking
    layer(h, y).backward()
    st = layer.stats()
    assert st["auto_masses"]["lsh"] < 0.6 <= st["auto_masses"]["faiss"]
    assert layer.choice(64).method == "faiss" and layer.index_method == "faiss"
    assert "lsh (faster) misses the target 0.6" in layer.explain(64)


def test_auto_falls_back_to_full_on_a_flat_softmax_and_trains(fast_table):
    W, h, y = flat(rows=16)
    layer = layer_for(W, target_mass=0.9)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        loss = layer(h, y)
        loss.backward()
        opt.step()
    st = layer.stats()
    assert layer.choice(16).method == "full" and st["auto_choice"] == "full"
    assert layer.index is None and st["index"] is None  # the exact path keeps no index
    assert all(m < 0.9 for m in st["auto_masses"].values()) and "lsh" in st["auto_masses"]
    text = layer.explain(16)
    assert "lsh (faster) misses the target 0.9" in text and "full is exact" in text
    exact = torch.nn.functional.cross_entropy(h @ layer.weight.T, y)
    assert torch.allclose(layer(h, y), exact, atol=1e-5)  # it is the exact loss
    assert layer.steps == 4


_train = train_losses


def test_switching_paths_mid_training_keeps_steps_and_checkpoints(fast_table):
    """A resumed layer continues the run exactly. With the live rows: the default copy of
    the rows (rerank_copy=None on a CPU) is taken at the resumed build from that step's
    weights, not restored, so its choices may differ from the run's until the next refresh."""
    W, _, _ = planted()
    batches = [planted(seed=s, rows=16)[1:] for s in range(9)]
    live_layer = functools.partial(layer_for, rerank_copy=False)
    layer = live_layer(W, target_mass=0.98, refresh_every=3)  # unreachable: the exact path
    _train(layer, batches[:3])
    assert layer.choice(16).method == "full" and layer.steps == 3
    saved_on_full = layer.state_dict()
    layer.target_mass = 0.5  # lsh meets it: the select due at step 3 switches
    from_full = live_layer(W, target_mass=0.5, refresh_every=3)
    from_full.load_state_dict(saved_on_full)
    assert from_full.choice(16).method == "full" and from_full.steps == 3
    assert _train(from_full, batches[3:5]) == _train(layer, batches[3:5])
    assert from_full.choice(16).method == "lsh" and from_full.index.nprobe == layer.index.nprobe
    assert layer.choice(16).method == "lsh" and layer.steps == 5
    assert layer.stats()["auto_choice"] == "lsh" and layer.index_method == "lsh"
    state = layer.state_dict()

    resumed = live_layer(W, target_mass=0.5, refresh_every=3)
    resumed.load_state_dict(state)
    assert resumed.steps == 5 and resumed.choice(16).method == "lsh"
    assert resumed.stats()["auto_choice"] == "lsh"
    assert resumed.stats()["auto_masses"] == layer.stats()["auto_masses"]
    # the two continue identically: same path, same lists and nprobe, same draws
    assert _train(resumed, batches[5:6]) == _train(layer, batches[5:6])
    assert resumed.index.nprobe == layer.index.nprobe
    # and back to the exact path at the next select (step 6), in both
    for m in (layer, resumed):
        m.target_mass = 0.98
    a, b = _train(layer, batches[6:8]), _train(resumed, batches[6:8])
    assert a == b and layer.choice(16).method == "full" == resumed.choice(16).method
    assert layer.steps == resumed.steps == 8 and layer.index is None


# ---- (d) the reports -------------------------------------------------------------------------
def test_stats_and_explain_before_and_after_a_refresh():
    W, h, y = planted()
    layer = layer_for(W, method="lsh", target_mass=0.6)
    st = layer.stats()
    assert st["target_mass"] == 0.6 and st["target_met"] is None and st["probe_rows"] == 0
    assert "target_mass 0.6: not measured yet" in layer.explain(64)
    layer.refresh()  # no training batch yet: built, not measured
    assert layer.stats()["target_met"] is None
    layer(h, y).backward()  # the first training step was a refresh already: no probe
    layer.refresh()  # with the probe rows of that step
    st = layer.stats()
    assert set(st) >= {
        "captured_mass",
        "nprobe",
        "target_met",
        "probe_seconds",
        "probe_seconds_total",
        "auto_choice",
        "auto_masses",
    }
    assert st["target_met"] is True and st["auto_choice"] is None and st["auto_masses"] == {}
    assert st["probe_seconds_total"] >= st["probe_seconds"] > 0
    text = layer.explain(64)
    assert f"captured mass {st['captured_mass']:.3f}" in text and f"nprobe={st['nprobe']}" in text
    assert "target 0.6 met" in text
    plain = layer_for(W, method="lsh")  # no target: nothing measured, nothing said
    plain(h, y).backward()
    assert plain.stats()["target_mass"] is None and "captured mass" not in plain.explain(64)


def test_auto_on_the_exact_path_by_speed_says_nothing_of_mass():
    small = SampledSoftmaxLoss(1000, 8, num_candidates=16, num_uniform=16)  # below crossovers
    text = small.explain(4)
    assert small.choice(4).method == "full" and "captured mass" not in text
    assert "target_mass" not in text
    assert small.stats()["auto_choice"] is None


def test_the_ceiling_is_the_mass_of_the_exact_top_k():
    W, h, y = planted(rows=8)
    b = 0.1 * torch.randn(N_CLASSES)
    lse, ceiling = lse_without_target(h, W, b, y, chunk=300, top=10)  # several class blocks
    z = (h @ W.T + b).double()
    z[torch.arange(8), y] = float("-inf")
    p = torch.softmax(z, dim=1)
    want = p.topk(10, dim=1).values.sum(1)
    assert torch.allclose(ceiling.double(), want, atol=1e-5)
    assert torch.allclose(lse.double(), torch.logsumexp(z, 1), atol=1e-4)


def test_auto_default_target_is_relative_so_an_untrained_model_keeps_its_sampled_path(fast_table):
    """A flat softmax (an untrained model): no 63 classes hold half the mass, so an absolute
    0.5 would send auto to the exact path; the default asks for half of what the exact top-63
    holds, which the clusters lists find. An explicit target_mass stays absolute."""
    W, h, y = flat(rows=16)
    layer = layer_for(W)
    layer(h, y).backward()
    st = layer.stats()
    assert st["target_relative"] and st["mass_ceiling"] < 0.5  # absolute 0.5: unreachable
    assert st["auto_masses"]["lsh"] >= st["mass_goal"] == AUTO_TARGET_SHARE * st["mass_ceiling"]
    assert layer.choice(16).method == "lsh"
    assert "of the exact top-63 mass" in layer.explain(16)
    absolute = layer_for(W, target_mass=AUTO_TARGET_SHARE)
    absolute(h, y).backward()
    assert not absolute.stats()["target_relative"] and absolute.choice(16).method == "full"


# ---- (e) search_min_mass: no search while it captures little ---------------------------------
@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, True, "0.3", float("nan")])
def test_search_min_mass_must_be_in_the_half_open_unit_interval(bad):
    with pytest.raises(ValueError, match="search_min_mass"):
        SampledSoftmaxLoss(100, 8, method="lsh", search_min_mass=bad)


def test_search_min_mass_is_for_lsh_faiss_and_auto_on_one_device():
    assert SampledSoftmaxLoss(100, 8, method="lsh", search_min_mass=1).search_min_mass == 1.0
    assert SampledSoftmaxLoss(100, 8, method="auto", search_min_mass=0.5).search_min_mass == 0.5
    for method in ("full", "uniform"):
        with pytest.raises(ValueError, match="search_min_mass"):
            SampledSoftmaxLoss(100, 8, method=method, search_min_mass=0.5)
    with pytest.raises(ValueError, match="search_min_mass cannot be used with a shard"):
        SampledSoftmaxLoss(100, 8, method="lsh", group=None, bounds=[(0, 100)], search_min_mass=0.5)


@pytest.mark.parametrize("scheme", ["per_example", "shared_samples"])
def test_below_the_floor_the_step_is_the_uniform_step(scheme):
    """A flat softmax: the measured mass is far below 0.5, so the lsh layer takes S = {target}
    and draws the same T as method="uniform" with the same seed: the same losses."""
    W, h, y = flat()
    batches = [(h[i::4], y[i::4]) for i in range(4)]
    gated = layer_for(W, method="lsh", search_min_mass=0.5, candidate_scheme=scheme)
    uniform = layer_for(W, method="uniform", candidate_scheme=scheme)
    assert _train(gated, batches) == _train(uniform, batches)
    st = gated.stats()
    assert st["search_on"] is False and st["search_min_mass"] == 0.5
    # even the exact top-(|S| - 1) holds less than the floor: no index could reach it, so
    # none is built (at every scheduled refresh of the 4 steps: steps 0 and 5 -> one)
    assert st["mass_ceiling"] < 0.5 and st["index_builds_deferred"] >= 1
    assert st["refresh_count"] == 0 and not gated.index.built
    assert "search OFF and the index not built" in gated.explain()
    # inference still finds candidates: topk builds the index it needs
    s, ids = gated.topk(h[:3], 5)
    assert gated.index.built and ids.shape == (3, 5) and (ids >= 0).all()
    assert all(row.unique().numel() == 5 for row in ids)


def _floor_needing(ceiling):
    """The floor whose ceiling_to_build is `ceiling`: the inverse of min(f / CEILING_SHARE,
    (1 + f) / 2), each piece inverted by hand."""
    return max(quality.CEILING_SHARE * ceiling, 2 * ceiling - 1)


def test_a_build_is_deferred_only_while_the_exact_ceiling_is_below_what_a_build_needs():
    """planted: a floor whose build threshold is just under the exact top-63's mass on the
    probe rows, so the index is built and measured at the first refresh; one just over it
    defers the build. The threshold: floor / 0.75 at low floors, halfway to 1 at high ones."""
    assert quality.ceiling_to_build(0.3) == pytest.approx(0.4)
    assert quality.ceiling_to_build(0.9) == pytest.approx(0.95)
    assert quality.ceiling_to_build(1.0) == 1.0
    W, h, y = planted()
    batches = [(h[i::4], y[i::4]) for i in range(2)]
    h0, y0 = batches[0]
    ceiling = float(lse_without_target(h0, W, None, y0, top=S - 1)[1].mean())
    assert ceiling > 0.5
    low = _floor_needing(ceiling - 1e-3)
    assert quality.ceiling_to_build(low) == pytest.approx(ceiling - 1e-3)
    under = layer_for(W, method="lsh", search_min_mass=low)
    _train(under, batches)
    st = under.stats()
    assert st["index_builds_deferred"] == 0 and st["refresh_count"] == 1 and under.index.built
    assert st["search_on"] == (st["captured_mass"] >= low)
    over = layer_for(W, method="lsh", search_min_mass=min(1.0, _floor_needing(ceiling + 1e-3)))
    _train(over, batches)
    assert over.stats()["index_builds_deferred"] == 1 and not over.index.built
    assert "under the 0." in over.explain() and "a build needs to reach" in over.explain()


def test_a_rebuild_waits_while_the_kept_index_captures_under_half_the_floor():
    """planted, the SimHash tables: the first build captures about 0.25 of the mass where
    the exact top-63 holds 0.92. With the floor at 0.6 the kept index is under half of it and
    the ceiling does not rise (lr 0, one batch), so the next refreshes search the kept index
    instead of rebuilding, MAX_KEPT_RUNS in a row, then one rebuilds; at a floor of 0.45 the
    kept index's mass passes half the floor and every refresh rebuilds. The probe draws from
    no global RNG: both layers' T draws, so their losses, are the same."""
    W, h, y = planted()
    kw = dict(method="lsh", lsh_generator="tables", refresh_every=1)
    runs = {}
    for floor in (0.6, 0.45):
        layer = layer_for(W, search_min_mass=floor, **kw)
        runs[floor] = (layer, _train(layer, [(h, y)] * (quality.MAX_KEPT_RUNS + 2), lr=0.0))
        first = layer.quality.measured["lsh"]  # a build's measurement (the last refresh built)
        assert first["ceiling"] >= quality.ceiling_to_build(floor)
        assert quality.STALE_SHARE * 0.45 <= first["mass"] < quality.STALE_SHARE * 0.6
    waits, rebuilds = runs[0.6][0].stats(), runs[0.45][0].stats()
    assert rebuilds["refresh_count"] == quality.MAX_KEPT_RUNS + 2
    assert rebuilds["index_builds_deferred"] == 0
    assert waits["index_builds_deferred"] == quality.MAX_KEPT_RUNS
    assert waits["refresh_count"] == 2 and waits["search_on"] is False
    assert runs[0.6][1] == runs[0.45][1]
    mid = layer_for(W, search_min_mass=0.6, **kw)
    _train(mid, [(h, y)], lr=0.0)
    mass = mid.quality.last["mass"]
    _train(mid, [(h, y)], lr=0.0)  # the same rows, weights and index: the same mass
    assert mid.quality.last["kept_mass"] == pytest.approx(mass, abs=1e-6)
    assert "the index kept from the last build captures" in mid.explain()
    # the ceiling rises (sharper rows): the kept index's low mass no longer holds a build back
    with torch.no_grad():
        mid.weight.mul_(1.1)
    _train(mid, [(h, y)], lr=0.0)
    assert mid.stats()["refresh_count"] == 2


def test_above_the_floor_the_step_is_the_lsh_step():
    W, h, y = planted()
    batches = [(h[i::4], y[i::4]) for i in range(4)]
    gated = layer_for(W, method="lsh", search_min_mass=0.05)
    plain = layer_for(W, method="lsh")
    assert _train(gated, batches) == _train(plain, batches)
    st = gated.stats()
    assert st["search_on"] is True and st["captured_mass"] >= 0.05
    assert "search on" in gated.explain()
    assert plain.stats()["search_on"] is None  # not asked for: nothing reported


def test_the_search_switches_on_at_the_refresh_that_measures_enough_and_checkpoints_keep_it():
    W, h, y = planted()
    layer = layer_for(W / 50, method="lsh", search_min_mass=0.3, refresh_every=3)
    batches = [(h[i::8], y[i::8]) for i in range(8)]
    _train(layer, batches[:2], lr=0.0)  # flat (scaled down): off from the first refresh
    assert layer.stats()["search_on"] is False
    off_state = layer.state_dict()
    with torch.no_grad():
        layer.weight.mul_(50)  # the planted groups again: the next refresh (step 3) measures
    _train(layer, batches[2:3], lr=0.0)
    assert layer.stats()["search_on"] is False  # no refresh yet: still the old measurement
    _train(layer, batches[3:4], lr=0.0)
    assert layer.stats()["search_on"] is True and layer.stats()["captured_mass"] >= 0.3
    with torch.no_grad():
        layer.weight.div_(50)  # flat again: measured below the floor, and the search stays on
    _train(layer, batches[4:7], lr=0.0)
    assert layer.stats()["captured_mass"] < 0.3 and layer.stats()["search_on"] is True
    assert layer.quality.searching("lsh") and "search on" in layer.explain()
    # a checkpoint taken while the search was off resumes with it off until its next refresh
    resumed = layer_for(W / 50, method="lsh", search_min_mass=0.3, refresh_every=3)
    resumed.load_state_dict(off_state)
    assert resumed.quality.searching("lsh") is False


def test_auto_below_the_floor_runs_the_chosen_path_without_its_search(fast_table):
    """method="auto" on a flat softmax: the quality rule picks a sampled path (its relative
    target is met), the gate keeps its search off, so the steps are method="uniform"'s with
    the same seed."""
    W, h, y = flat()
    batches = [(h[i::4], y[i::4]) for i in range(4)]
    gated = layer_for(W, method="auto", search_min_mass=0.5, candidate_scheme="shared_samples")
    uniform = layer_for(W, method="uniform", candidate_scheme="shared_samples")
    assert _train(gated, batches) == _train(uniform, batches)
    st = gated.stats()
    assert st["auto_choice"] in ("lsh", "faiss") and st["search_on"] is False
    plain = layer_for(W, method="auto", candidate_scheme="shared_samples")  # no gate
    assert _train(plain, batches) != _train(uniform, batches)


@pytest.mark.parametrize(
    "kw",
    [
        dict(method="faiss"),
        dict(method="lsh", candidate_scheme="bucket_shared"),
        dict(method="lsh", candidate_scheme="batch_union"),
        dict(method="lsh", drift_every=1),
    ],
)
def test_search_min_mass_below_the_floor_with_faiss_and_the_other_schemes(kw):
    W, h, y = flat()
    gated = layer_for(W, search_min_mass=0.5, **kw)
    loss = _train(gated, [(h, y)])[0]
    assert math.isfinite(loss) and gated.stats()["search_on"] is False


def test_auto_builds_no_index_while_the_gate_defers_every_build(fast_table):
    """method="auto" on a flat softmax with a floor whose build threshold the exact top-63
    does not reach: every select defers the fastest sampled path's build (no index is built to
    be measured, none of the ranked paths), runs that path (not the exact one: with the search
    off every sampled path takes the same step), and explain() says why."""
    W, h, y = flat()
    batches = [(h[i::4], y[i::4]) for i in range(4)]
    ceiling = float(lse_without_target(h, W, None, y, top=S - 1)[1].mean())
    assert quality.ceiling_to_build(0.5) > 2 * ceiling  # far from a build
    gated = layer_for(W, method="auto", search_min_mass=0.5, refresh_every=2)
    _train(gated, batches)
    st = gated.stats()
    assert st["refresh_count"] == 0 and st["index_builds_deferred"] == 2  # selects at 0 and 2
    assert st["auto_choice"] == "lsh" == gated.choice(16).method and st["search_on"] is False
    assert not gated.manager.index.built and st["auto_masses"] == {"lsh": st["captured_mass"]}
    assert "none is built to be measured" in gated.explain()
    ungated = layer_for(W, method="auto", refresh_every=2)  # builds at every select
    _train(ungated, batches)
    assert ungated.stats()["refresh_count"] >= 2


def test_auto_keeps_the_search_on_across_selects_and_checkpoints_keep_it(fast_table):
    """Once a refresh measured the floor the search stays on, also under method="auto", whose
    select measures every path anew: planted rows open it; scaled down to a flat softmax, the
    next selects measure under the floor and it stays on (a resumed module too)."""
    W, h, y = planted()
    batches = [(h[i::8], y[i::8]) for i in range(8)]
    kw = dict(method="auto", search_min_mass=0.3, refresh_every=2, rerank_copy=False)
    layer = layer_for(W, **kw)
    _train(layer, batches[:2], lr=0.0)
    assert layer.stats()["search_on"] is True and layer.stats()["captured_mass"] >= 0.3
    with torch.no_grad():
        layer.weight.div_(50)
    _train(layer, batches[2:6], lr=0.0)  # selects at steps 2 and 4
    st = layer.stats()
    assert st["auto_choice"] in ("lsh", "faiss") and st["captured_mass"] < 0.3
    assert st["search_on"] is True and layer.quality.searching(st["auto_choice"])
    resumed = layer_for(W / 50, **kw)
    resumed.load_state_dict(layer.state_dict())
    assert resumed.quality.search_open and resumed.quality.searching(st["auto_choice"])
    assert _train(resumed, batches[6:8], lr=0.0) == _train(layer, batches[6:8], lr=0.0)
