"""search_min_mass="auto" (the default): the lsh / faiss search is gated at
options.AUTO_SEARCH_MIN_MASS of captured mass; no gate where a gate cannot run (method auto,
full, uniform; sharded modules; bucket_shared) or where the user turned it off (None)."""

from __future__ import annotations

import pytest
import torch

from triton_softmax import SampledSoftmaxLoss
from triton_softmax.options import AUTO_SEARCH_MIN_MASS, IndexOptions, SamplingOptions, ShardSpec


@pytest.mark.parametrize("method", ["lsh", "faiss"])
def test_default_gates_the_search_of_lsh_and_faiss(method):
    layer = SampledSoftmaxLoss(500, 8, method=method, num_candidates=8, num_uniform=8)
    assert layer.index_options.search_min_mass == AUTO_SEARCH_MIN_MASS == 0.3
    assert "search_min_mass 0.3" in layer.explain(16)


@pytest.mark.parametrize(
    "kw",
    [
        dict(method="full"),
        dict(method="uniform"),
        dict(method="lsh", search_min_mass=None),
        dict(method="lsh", candidate_scheme="bucket_shared"),
    ],
)
def test_no_gate_where_it_cannot_run_or_is_off(kw):
    layer = SampledSoftmaxLoss(500, 8, num_candidates=8, num_uniform=8, **kw)
    assert layer.index_options.search_min_mass is None


def test_auto_is_gated_too():
    """method="auto" gates the sampled path it chooses (judged at budgets: without the gate
    it searched from the first step and trailed the default at 1-4 minutes on synset)."""
    layer = SampledSoftmaxLoss(500, 8, num_candidates=8, num_uniform=8, method="auto")
    assert layer.index_options.search_min_mass == 0.3


def test_sharded_options_resolve_to_no_gate():
    idx = IndexOptions(method="lsh").resolved(SamplingOptions(), ShardSpec())
    assert idx.search_min_mass is None
    assert IndexOptions(method="lsh").resolved(SamplingOptions(), None).search_min_mass == 0.3


def test_an_explicit_gate_stays_and_bad_values_raise():
    layer = SampledSoftmaxLoss(500, 8, method="faiss", search_min_mass=0.05)
    assert layer.index_options.search_min_mass == 0.05
    for bad in (0.0, 1.5, "on", True):
        with pytest.raises(ValueError, match="search_min_mass"):
            SampledSoftmaxLoss(500, 8, method="lsh", search_min_mass=bad)


def test_setting_auto_later_resolves_it():
    layer = SampledSoftmaxLoss(500, 8, method="lsh", search_min_mass=None)
    layer.search_min_mass = "auto"
    assert layer.index_options.search_min_mass == 0.3


def test_gated_first_step_scores_only_the_target_and_t():
    """An untrained layer (random weights, flat softmax): the first refresh measures less
    than 0.3 of the mass in reach, so no index is built and the step searches nothing."""
    torch.manual_seed(0)
    layer = SampledSoftmaxLoss(2000, 16, method="lsh", num_candidates=32, num_uniform=8)
    h, y = torch.randn(64, 16), torch.randint(0, 2000, (64,))
    layer(h, y).backward()
    st = layer.stats()
    assert st["search_on"] is False and layer.refresh_count == 0, st
