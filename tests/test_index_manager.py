"""index/manager.py: partial refresh equals a full re-hash at the same scale."""

import pytest
import torch

from triton_softmax import SampledSoftmaxLoss


def test_partial_refresh_equals_a_full_rehash_with_the_same_scale():
    from triton_softmax.lsh import bucket_table_ref, simhash_codes_ref

    torch.manual_seed(0)
    layer = SampledSoftmaxLoss(
        5000,
        16,
        method="lsh",
        num_candidates=16,
        num_uniform=16,
        sparse_grad=True,
        partial_refresh=True,
        refresh_every=2,
        search_min_mass=None,
        lsh_generator="tables",  # the SimHash tables' update_rows is what this checks
    )
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    h, y = torch.randn(8, 16), torch.randint(0, 5000, (8,))
    before = layer.weight.detach().clone()
    for _ in range(5):  # full build at step 0, partial refreshes at steps 2 and 4
        opt.zero_grad()
        layer(h, y).backward()
        opt.step()
    assert layer.stats()["refresh_count_partial"] == 2 and layer.refresh_count == 3
    changed = (layer.weight.detach() != before).any(1)
    assert 0 < int(changed.sum()) < 5000 // 2
    idx = layer.index
    layer.refresh()  # picks up step 4's update of the weights as well
    codes = simhash_codes_ref(layer.weight.detach(), idx.hyperplanes, None, idx.max_norm)
    assert torch.equal(idx.codes, codes)
    sid, off = bucket_table_ref(codes, idx.num_bits, idx.seed)
    assert torch.equal(idx.sorted_ids, sid) and torch.equal(idx.offsets, off)
    with pytest.raises(ValueError, match="partial_refresh needs sparse_grad"):
        SampledSoftmaxLoss(100, 4, partial_refresh=True)
