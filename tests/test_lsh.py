"""SimHash LSH twin: codes, tables, lookup, and what recall it buys."""

import pytest
import torch

from triton_softmax.loss import exact_topk, recall_at_k
from triton_softmax.lsh import (
    LSHIndex,
    bucket_table_ref,
    default_max_per_bucket,
    lsh_candidates_ref,
    make_hyperplanes,
    max_row_norm,
    simhash_codes_ref,
)


def _brute_codes(x_aug, planes):
    L, K, _ = planes.shape
    proj = torch.einsum("md,lkd->mlk", x_aug.double(), planes.double())
    return ((proj > 0).long() * (1 << torch.arange(K))).sum(-1).int()


@pytest.mark.parametrize("bias", [False, True])
def test_codes_match_explicit_mips_transform(bias):
    g = torch.Generator().manual_seed(0)
    n, d, K, L = 57, 13, 7, 3
    W = torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g) * 3
    b = torch.randn(n, generator=g) if bias else None
    planes = make_hyperplanes(d, K, L, seed=1)
    M = max_row_norm(W, b)
    codes = simhash_codes_ref(W, planes, b, M)
    bcol = b if bias else torch.zeros(n)
    x = torch.cat([W, bcol[:, None]], 1)
    extra = (M**2 - x.pow(2).sum(1)).clamp_min(0).sqrt()
    # P(x) = [x / M, sqrt(1 - |x|^2 / M^2)]: the same signs as [x, sqrt(M^2 - |x|^2)]
    keys = torch.cat([x / M, (extra / M)[:, None]], 1)
    assert torch.equal(codes, _brute_codes(keys, planes))
    q = torch.randn(9, d, generator=g)
    qcol = torch.ones(9) if bias else torch.zeros(9)
    q_aug = torch.cat([q, qcol[:, None], torch.zeros(9, 1)], 1)  # Q(q), up to a positive scale
    qcodes = simhash_codes_ref(q, planes, 1.0 if bias else None, None)
    assert torch.equal(qcodes, _brute_codes(q_aug, planes))


def test_bucket_table_is_a_complete_csr():
    g = torch.Generator().manual_seed(0)
    n, K, L = 300, 5, 4
    codes = torch.randint(0, 1 << K, (n, L), generator=g, dtype=torch.int32)
    codes[:, 0] = 3  # one giant bucket, the others empty in table 0
    sorted_ids, offsets = bucket_table_ref(codes, K, order_seed=7)
    assert sorted_ids.shape == (L, n) and offsets.shape == (L, (1 << K) + 1)
    for l in range(L):
        assert sorted(sorted_ids[l].tolist()) == list(range(n))
        assert offsets[l, 0] == 0 and offsets[l, -1] == n
        for c in range(1 << K):
            members = sorted_ids[l, offsets[l, c] : offsets[l, c + 1]].long()
            assert (codes[members, l] == c).all()
    assert offsets[0, 3] == 0 and offsets[0, 4] == n
    # within a bucket the order is shuffled, not by id
    assert sorted_ids[0].tolist() != list(range(n))


def test_lookup_counts_collisions_and_ranks():
    n, K, L = 40, 3, 4
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(0, 1 << K, (n, L), generator=g, dtype=torch.int32)
    sorted_ids, offsets = bucket_table_ref(codes, K)
    q = torch.randint(0, 1 << K, (6, L), generator=g, dtype=torch.int32)
    ids, coll = lsh_candidates_ref(q, sorted_ids, offsets, num_candidates=n, max_per_bucket=n)
    for i in range(6):
        brute = (codes == q[i]).sum(1)  # tables in which class j collides with query i
        got = {int(j): int(c) for j, c in zip(ids[i], coll[i]) if j >= 0}
        assert got == {j: int(brute[j]) for j in range(n) if brute[j] > 0}
        valid = coll[i][ids[i] >= 0]
        assert (valid[:-1] >= valid[1:]).all(), "ranked by collision count"
    capped, _ = lsh_candidates_ref(q, sorted_ids, offsets, num_candidates=3, max_per_bucket=2)
    assert capped.shape == (6, 3)


def test_empty_buckets_give_padding():
    codes = torch.zeros(10, 2, dtype=torch.int32)
    sorted_ids, offsets = bucket_table_ref(codes, 4)
    ids, coll = lsh_candidates_ref(
        torch.full((3, 2), 5, dtype=torch.int32), sorted_ids, offsets, 4, 8
    )
    assert (ids == -1).all() and (coll == 0).all()


def _recall(W, q, K, L, C, exact_ids, mips=True):
    idx = LSHIndex(W.shape[1], K, L, seed=3)
    if mips:
        cand = idx.build(W).search(q, C)
    else:  # plain SimHash of the keys: no MIPS coordinate, same tables and lookup
        codes = simhash_codes_ref(W, idx.hyperplanes, None, None)
        sid, off = bucket_table_ref(codes, K)
        cand, _ = lsh_candidates_ref(idx.query_codes(q), sid, off, C, default_max_per_bucket(C, L))
    return recall_at_k(cand, exact_ids)


def _unequal_norm_problem(n=4000, d=32, N=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    W = direction * torch.exp(torch.randn(n, 1, generator=g))  # log-normal row norms
    q = direction[torch.randint(0, n, (N,), generator=g)] + 0.1 * torch.randn(N, d, generator=g)
    return W, q, exact_topk(q, W, 10)[1]


def test_recall_rises_with_tables():
    W, q, exact_ids = _unequal_norm_problem()
    rec = [_recall(W, q, 6, L, 256, exact_ids) for L in (1, 4, 16)]
    assert rec[0] < rec[1] < rec[2], rec


def test_mips_transform_beats_plain_simhash_on_unequal_norms():
    """Each at its best K (the transform wants fewer bits): recall of the exact top-10."""
    W, q, exact_ids = _unequal_norm_problem()
    mips = max(_recall(W, q, K, 16, 256, exact_ids) for K in (4, 6, 8))
    plain = max(_recall(W, q, K, 16, 256, exact_ids, mips=False) for K in (4, 6, 8))
    assert mips > plain + 0.1, (mips, plain)
