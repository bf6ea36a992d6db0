"""drift.py: drift checks (exact vs estimated loss) and drift-triggered refreshes."""

import pytest
import torch
import torch.nn.functional as F

from triton_softmax import SampledSoftmaxLoss


def test_drift_check_reports_and_costs_nothing_when_off():
    seen = []
    layer = SampledSoftmaxLoss(
        3000,
        8,
        method="lsh",
        num_candidates=16,
        num_uniform=16,
        drift_every=2,
        drift_rows=4,
        drift_hook=seen.append,
    )
    h, y = torch.randn(8, 8), torch.randint(0, 3000, (8,))
    for _ in range(5):
        layer(h, y).backward()
    assert [s["step"] for s in seen] == [0, 2, 4] and len(layer.drift_log) == 3
    s = seen[-1]
    exact = F.cross_entropy(h[:4] @ layer.weight.detach().T, y[:4]).item()
    assert s["exact_loss"] == pytest.approx(exact, rel=1e-5)
    assert -1.0 <= s["grad_cosine"] <= 1.0 and s["rows"] == 4 and s["seconds"] > 0
    off = SampledSoftmaxLoss(3000, 8, method="lsh", num_candidates=16, num_uniform=16)
    for _ in range(3):
        off(h, y).backward()
    assert len(off.drift_log) == 0


@pytest.mark.parametrize("method", ["lsh", "faiss"])
def test_refresh_by_drift(method):
    layer = SampledSoftmaxLoss(
        2000,
        8,
        method=method,
        search_min_mass=None,  # the search from step 0: drift is the search's
        num_candidates=16,
        num_uniform=8,
        refresh_every=10**6,
        refresh_drift=0.05,
        drift_check_every=1,
    )
    h, y = torch.randn(8, 8), torch.randint(0, 2000, (8,))
    layer(h, y).backward()
    layer(h, y).backward()
    assert layer.stats()["refresh_count_drift"] == 0  # weights unchanged: no drift
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))  # a large move of every row
    layer(h, y).backward()
    st = layer.stats()
    assert st["refresh_count_drift"] == 1 and st["last_index_drift"] > 0.05
