import pytest
import torch

from triton_softmax import FaissIndex, exact_topk, recall_at_k

pytest.importorskip("faiss")


@pytest.mark.parametrize("bias", [False, True])
def test_flat_index_returns_exact_topk(bias):
    g = torch.Generator().manual_seed(0)
    n, d, N, k = 3000, 24, 50, 10
    W = torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g)
    b = torch.randn(n, generator=g) if bias else None
    h = torch.randn(N, d, generator=g)
    idx = FaissIndex("flat").build(W, b)
    got = idx.search(h, k)
    _, ref = exact_topk(h, W, k, b)
    assert got.dtype == torch.int64 and got.shape == (N, k)
    assert recall_at_k(got, ref) == 1.0


def test_ivf_with_all_lists_probed_is_exact_and_fewer_lists_is_not_worse_than_chance():
    g = torch.Generator().manual_seed(1)
    n, d, N = 2000, 16, 40
    W = torch.randn(n, d, generator=g)
    h = torch.randn(N, d, generator=g)
    _, ref = exact_topk(h, W, 5)
    full = FaissIndex("ivf", nlist=16, nprobe=16).build(W)
    assert recall_at_k(full.search(h, 5), ref) == 1.0
    part = FaissIndex("ivf", nlist=16, nprobe=2).build(W)
    assert recall_at_k(part.search(h, 5), ref) > 0.2


def test_k_larger_than_n_pads_with_minus_one():
    W = torch.randn(5, 4)
    ids = FaissIndex("flat").build(W).search(torch.randn(2, 4), 8)
    assert (ids[:, 5:] == -1).all() and (ids[:, :5] >= 0).all()


def test_bad_kind_and_search_before_build():
    with pytest.raises(ValueError, match="kind"):
        FaissIndex("hnsw")
    with pytest.raises(RuntimeError, match="build"):
        FaissIndex("flat").search(torch.randn(2, 4), 1)
