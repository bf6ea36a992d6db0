"""kernels/bucket_lookup.py: lsh_candidates and the fused lsh_query against a direct reference.

The direct reference counts, per query, how often each id appears in the first B entries of
its L buckets, and ranks by (count desc, id asc): exactly the kernel's contract. The twin
(lsh_candidates_ref) ranks ties in torch.topk's unspecified order, so against it the
collision counts must be equal and the ids equal above the row's cut-off count.
(The interpreter's tl.sort is slow, so the tables are tiny: L * B <= 32 slots per query.)
"""

from collections import Counter

import pytest
import torch

from triton_softmax import ops
from triton_softmax.kernels.bucket_lookup import lsh_candidates, lsh_query
from triton_softmax.lsh import (
    bucket_table_ref,
    lsh_candidates_ref,
    make_hyperplanes,
    simhash_codes_ref,
)
from triton_softmax.reference.simhash import lsh_query_ref

pytestmark = pytest.mark.usefixtures("poison_kernel_outputs")


def direct(query_codes, sorted_ids, offsets, C, B):
    N, L = query_codes.shape
    ids = torch.full((N, C), -1, dtype=torch.int64)
    coll = torch.zeros((N, C), dtype=torch.int32)
    for i in range(N):
        count = Counter()
        for l in range(L):
            c = int(query_codes[i, l])
            lo, hi = int(offsets[l, c]), int(offsets[l, c + 1])
            count.update(sorted_ids[l, lo : min(hi, lo + B)].tolist())
        ranked = sorted(count.items(), key=lambda kv: (-kv[1], kv[0]))[:C]
        for j, (x, k) in enumerate(ranked):
            ids[i, j], coll[i, j] = x, k
    return ids, coll


def check_against_twin(ids, coll, twin_ids, twin_coll):
    assert torch.equal(coll, twin_coll)
    for i in range(ids.shape[0]):
        cut = int(coll[i, -1]) if coll.shape[1] else 0
        above = coll[i] > cut
        assert set(ids[i][above].tolist()) == set(twin_ids[i][twin_coll[i] > cut].tolist())


def tables(n, K, L, seed):
    """Random codes with a giant bucket in table 0 and empty buckets elsewhere."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1 << K, (n, L), generator=g, dtype=torch.int32)
    codes[:, 0] = 3  # table 0: one bucket holds every class (capped reads), the rest empty
    if L > 1:
        codes[:, 1] %= 4  # table 1: buckets >= 4 empty
    return codes, bucket_table_ref(codes, K, order_seed=seed)


@pytest.mark.parametrize("C", [0, 1, 7, 40])  # 40 > the 32 slots a query can fill
@pytest.mark.parametrize("N", [1, 5])
def test_lsh_candidates_matches_direct_and_twin(C, N):
    n, K, L, B = 60, 4, 3, 5
    _, (sorted_ids, offsets) = tables(n, K, L, seed=C + N)
    g = torch.Generator().manual_seed(100 + C)
    q = torch.randint(0, 1 << K, (N, L), generator=g, dtype=torch.int32)
    q[0] = torch.tensor([5, 9, 0], dtype=torch.int32)[:L]  # empty buckets in tables 0 and 1
    if N > 1:
        q[1, 0] = 3  # the giant bucket
        q[2] = torch.tensor([7, 15, q[2, 2]])  # one table only
    ids, coll = lsh_candidates(q, sorted_ids, offsets, C, B)
    assert ids.shape == (N, C) and ids.dtype == torch.int64 and coll.dtype == torch.int32
    want_ids, want_coll = direct(q, sorted_ids, offsets, C, B)
    assert torch.equal(ids, want_ids) and torch.equal(coll, want_coll)
    check_against_twin(ids, coll, *lsh_candidates_ref(q, sorted_ids, offsets, C, B))


def test_all_buckets_empty_gives_padding_only():
    n, K, L, B = 20, 5, 2, 4
    codes = torch.zeros(n, L, dtype=torch.int32)  # every class in bucket 0 of each table
    sorted_ids, offsets = bucket_table_ref(codes, K)
    q = torch.full((2, L), 17, dtype=torch.int32)
    ids, coll = lsh_candidates(q, sorted_ids, offsets, 6, B)
    assert (ids == -1).all() and (coll == 0).all()


def test_lsh_candidates_strided_codes_and_no_queries():
    n, K, L, B = 30, 3, 3, 4
    _, (sorted_ids, offsets) = tables(n, K, L, seed=1)
    q = torch.randint(0, 1 << K, (L, 4), dtype=torch.int32).T  # (4, L), non-contiguous
    ids, coll = lsh_candidates(q, sorted_ids, offsets, 9, B)
    assert torch.equal(ids, direct(q, sorted_ids, offsets, 9, B)[0])
    ids0, coll0 = lsh_candidates(q[:0], sorted_ids, offsets, 9, B)
    assert ids0.shape == (0, 9) and coll0.shape == (0, 9)


def _clear_queries(n_q, d, planes, bias, seed):
    """Queries whose projections all clear zero by a margin, so their codes are unambiguous."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(50):
        h = torch.randn(n_q, d, generator=g)
        col = torch.full((n_q, 1), float(bias or 0.0))
        aug = torch.cat([h, col, torch.zeros(n_q, 1)], 1).double()
        proj = torch.einsum("md,lkd->mlk", aug, planes.double())
        if proj.abs().min() > 1e-3:
            return h
    raise AssertionError("no clear queries drawn")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [None, 1.0])
def test_fused_lsh_query_matches_hash_then_lookup(dtype, bias):
    n, d, K, L, B, C = 50, 21, 3, 3, 6, 11
    g = torch.Generator().manual_seed(7)
    W = torch.randn(n, d, generator=g)
    planes = make_hyperplanes(d, K, L, seed=4)
    key_bias = torch.randn(n, generator=g) if bias else None
    codes = simhash_codes_ref(W, planes, key_bias, W.norm(dim=1).max() * 2)
    sorted_ids, offsets = bucket_table_ref(codes, K, order_seed=2)
    h = _clear_queries(4, d, planes, bias, seed=3).to(dtype)
    ids, coll = lsh_query(h, planes, bias, sorted_ids, offsets, C, B)
    q = simhash_codes_ref(h, planes, bias, None)
    want_ids, want_coll = direct(q, sorted_ids, offsets, C, B)
    assert torch.equal(ids, want_ids) and torch.equal(coll, want_coll)
    check_against_twin(ids, coll, *lsh_query_ref(h, planes, bias, sorted_ids, offsets, C, B))


def test_lsh_query_rejects_mismatched_tables():
    planes = make_hyperplanes(8, 3, 2, seed=0)
    sorted_ids, offsets = bucket_table_ref(torch.zeros(5, 3, dtype=torch.int32), 3)
    with pytest.raises(ValueError):
        lsh_query(torch.randn(2, 8), planes, None, sorted_ids, offsets, 4, 4)


def test_large_tiles_fall_back_to_two_launches_or_the_twin(monkeypatch):
    from triton_softmax.kernels import bucket_lookup

    n, d, K, L, B, C = 40, 10, 3, 3, 4, 9
    planes = make_hyperplanes(d, K, L, seed=1)
    W = torch.randn(n, d)
    sorted_ids, offsets = bucket_table_ref(simhash_codes_ref(W, planes, None, 10.0), K)
    h = _clear_queries(2, d, planes, None, seed=8)
    q = simhash_codes_ref(h, planes, None, None)
    want = direct(q, sorted_ids, offsets, C, B)
    monkeypatch.setattr(bucket_lookup, "MAX_HASH_COLS", 8)  # hash, then look up
    ids, coll = lsh_query(h, planes, None, sorted_ids, offsets, C, B)
    assert torch.equal(ids, want[0]) and torch.equal(coll, want[1])
    # too many slots for registers: the launcher refuses, ops routes the call to the twin
    monkeypatch.setattr(bucket_lookup, "MAX_P", 8)
    with pytest.raises(ValueError, match="MAX_P"):
        lsh_query(h, planes, None, sorted_ids, offsets, C, B)
    with pytest.raises(ValueError, match="MAX_P"):
        lsh_candidates(q, sorted_ids, offsets, C, B)
    assert not bucket_lookup.lsh_candidates_fits(q, sorted_ids, offsets, C, B)
    assert not bucket_lookup.lsh_query_fits(h, planes, None, sorted_ids, offsets, C, B)
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")
    twin = lsh_candidates_ref(q, sorted_ids, offsets, C, B)
    for ids, coll in (
        ops.lsh_query(h, planes, None, sorted_ids, offsets, C, B),
        ops.lsh_candidates(q, sorted_ids, offsets, C, B),
    ):
        assert torch.equal(ids, twin[0]) and torch.equal(coll, twin[1])
    monkeypatch.setattr(bucket_lookup, "MAX_P", 16384)  # fits again: the kernel runs
    assert bucket_lookup.lsh_query_fits(h, planes, None, sorted_ids, offsets, C, B)
    ids, coll = ops.lsh_query(h, planes, None, sorted_ids, offsets, C, B)
    assert torch.equal(ids, want[0]) and torch.equal(coll, want[1])
