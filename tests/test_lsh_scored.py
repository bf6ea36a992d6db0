"""The SimHash tables' scored ranking (rank="score"): the twin reference/simhash.py
lsh_scored_ref against a float64 loop, the CUDA route index/list_tiles.search_table_tiles
(the list-tile kernel over the (table, bucket) ranges, tie_by_row, capped reads, then
merge_table_topk) run on the kernel under the interpreter against the twin, LSHIndex with
both rankings, and the option.

Adversarial inputs: equal scores (integer-valued rows: every dot exact in fp32, the tie rule
decides: the smaller class id first), -0.0 against +0.0, a NaN row, masked classes (-inf
bias), empty buckets and buckets shorter than k, k past the union, the same ids in one bucket
of every table (the merge drops the repeats), odd sizes. Pairing: every returned score is
the float64 logit of the returned id. Sizes are tiny (the interpreter's tl.sort is slow).
"""

import pytest
import torch

from triton_softmax.index.list_tiles import merge_table_topk, search_table_tiles, tables_csr
from triton_softmax.index.simhash import LSHIndex, default_rank
from triton_softmax.kernels.list_tiles import list_tile_topk
from triton_softmax.options import IndexOptions
from triton_softmax.reference.list_tiles import list_tile_topk_ref
from triton_softmax.reference.simhash import bucket_table_ref, lsh_scored_ref

pytestmark = pytest.mark.usefixtures("poison_kernel_outputs")

n, d, L, K, N = 61, 19, 3, 4, 7
SHARED = 13  # bucket of classes 0-3 in every table, probed by query 0 in every table


def problem(integer=False, bias=True, dtype=torch.float32, seed=0):
    """(h, w, b, query_codes, sorted_ids, offsets): random tables of L x 2^K buckets; classes
    0-3 share bucket SHARED in every table (query 0 probes it everywhere: the repeats); a
    masked class (2) and a NaN row (5) inside it or beside it; bucket 15 of table 0 empty
    and probed by query 1."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1 << K, (n, L), generator=gen, dtype=torch.int32)
    codes[codes == SHARED] = 0
    codes[:4] = SHARED
    codes[:, 0][codes[:, 0] == 15] = 14
    codes[5] = SHARED - 1
    sorted_ids, offsets = bucket_table_ref(codes, K, order_seed=seed)
    if integer:  # entries in {-1, 0, 1}: many equal logits, zeros
        w = torch.randint(-1, 2, (n, d), generator=gen).float()
        h = torch.randint(-1, 2, (N, d), generator=gen).float()
        b = torch.randint(-1, 2, (n,), generator=gen).float()
        w[[1, 3, 9]] = w[0].clone()  # equal rows inside the shared bucket and outside it
        b[[1, 3, 9]] = b[0].clone()
    else:
        w, h, b = (torch.randn(s, generator=gen) for s in ((n, d), (N, d), (n,)))
    b[2] = float("-inf")  # masked, in the shared bucket
    w[5] = float("nan")
    qc = torch.randint(0, 1 << K, (N, L), generator=gen, dtype=torch.int32)
    qc[0] = SHARED
    qc[1, 0] = 15
    qc[2] = SHARED - 1  # the NaN row's buckets
    cast = (lambda t: t.to(dtype)) if dtype != torch.float32 else (lambda t: t)
    return cast(h), cast(w), cast(b) if bias else None, qc, sorted_ids, offsets


def loop_oracle(h, w, b, qc, sorted_ids, offsets, k, B):
    """Per query: [(score, id)] of the k best distinct classes of its capped buckets by a
    float64 loop, ties by id; non-finite logits dropped."""
    out = []
    for i in range(qc.shape[0]):
        union = set()
        for t in range(qc.shape[1]):
            c = int(qc[i, t])
            lo, hi = int(offsets[t, c]), int(offsets[t, c + 1])
            union.update(sorted_ids[t, lo : min(hi, lo + B)].tolist())
        pairs = []
        for j in sorted(union):
            z = float(w[j].double() @ h[i].double() + (b[j].double() if b is not None else 0))
            if z == z and abs(z) != float("inf"):
                pairs.append((z, j))
        out.append(sorted(pairs, key=lambda t: (-t[0], t[1]))[:k])
    return out


def check(s, ids, want, k, exact_scores=False):
    assert s.shape == ids.shape == (len(want), k)
    assert s.dtype == torch.float32 and ids.dtype == torch.int64
    for i, pairs in enumerate(want):
        assert ids[i, : len(pairs)].tolist() == [j for _, j in pairs], i
        got = s[i, : len(pairs)].double()
        ref = torch.tensor([z for z, _ in pairs], dtype=torch.float64)
        if exact_scores:
            assert torch.equal(got, ref), i
        else:
            torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
        assert (ids[i, len(pairs) :] == -1).all() and torch.isneginf(s[i, len(pairs) :]).all()
    assert not torch.signbit(s[s == 0]).any()  # -0.0 comes back as +0.0


def tiles(h, w, b, qc, sorted_ids, offsets, k, B, monkeypatch):
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")  # the kernel, on the interpreter
    out = search_table_tiles(h, w, b, sorted_ids, tables_csr(sorted_ids, offsets), qc, k, B)
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "torch")
    return out


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("k, B", [(5, 4), (40, 3), (9, 100)])
def test_twin_against_float64_loop(integer, bias, k, B):
    h, w, b, qc, sorted_ids, offsets = problem(integer, bias)
    s, ids = lsh_scored_ref(h, w, b, qc, sorted_ids, offsets, k, B)
    want = loop_oracle(h, w, b, qc, sorted_ids, offsets, k, B)
    check(s, ids, want, k, exact_scores=integer)
    assert any(len(p) < k for p in want) or k == 5, "k past some union"
    assert not (ids == 5).any() and not (bias and (ids == 2).any())  # NaN row, masked


@pytest.mark.parametrize(
    "integer, bias, dtype, k, B",
    [
        (True, True, torch.float32, 5, 4),
        (False, True, torch.float32, 6, 8),
        (True, False, torch.float32, 40, 3),  # k' = B: the whole capped read, k past unions
        (True, True, torch.bfloat16, 7, 5),
    ],
)
def test_kernel_route_matches_twin_and_loop(monkeypatch, integer, bias, dtype, k, B):
    h, w, b, qc, sorted_ids, offsets = problem(integer, bias, dtype)
    s, ids = tiles(h, w, b, qc, sorted_ids, offsets, k, B, monkeypatch)
    s_ref, ids_ref = lsh_scored_ref(h, w, b, qc, sorted_ids, offsets, k, B)
    assert torch.equal(ids, ids_ref)  # integer data: exact ties; random: none near here
    torch.testing.assert_close(s, s_ref, atol=1e-4, rtol=1e-4)
    check(s, ids, loop_oracle(h, w, b, qc, sorted_ids, offsets, k, B), k, exact_scores=integer)
    # query 0 reads the shared bucket in every table: its classes come back once each
    for row in ids:
        assert row[row >= 0].unique().numel() == int((row >= 0).sum())
    assert (ids[0] >= 0).sum() >= 2 and (ids[0] >= 0).sum() <= min(k, 3)


def test_negative_zero_and_equal_scores_tie_by_id(monkeypatch):
    """Every logit 0 (rows of +0.0 and -0.0, h . w = -0.0 for some): all tie, the smallest
    ids first, whatever their order in the bucket, and every score is +0.0."""
    h = torch.tensor([[1.0, 1.0]])
    w = torch.tensor([[-0.0, -0.0], [0.0, 0.0]]).repeat(5, 1)
    b = torch.tensor([-0.0, 0.0]).repeat(5)
    codes = torch.zeros(10, 2, dtype=torch.int32)
    sorted_ids, offsets = bucket_table_ref(codes, 1, order_seed=3)
    assert sorted_ids[0].tolist() != list(range(10)), "a bucket in a random order"
    qc = torch.zeros(1, 2, dtype=torch.int32)
    s_ref, ids_ref = lsh_scored_ref(h, w, b, qc, sorted_ids, offsets, 4, 10)
    s, ids = tiles(h, w, b, qc, sorted_ids, offsets, 4, 10, monkeypatch)
    for a, i in ((s, ids), (s_ref, ids_ref)):
        assert i.tolist() == [[0, 1, 2, 3]]
        assert (a == 0).all() and not torch.signbit(a).any()


def test_tie_by_row_and_capped_lists_in_the_kernel():
    """list_tile_topk(tie_by_row=True): members in a random order, int32; the rows come back,
    ties by the smaller row; max_list caps every read at a list's first members (the twin
    reads the same prefix)."""
    gen = torch.Generator().manual_seed(4)
    m = 40
    w = torch.randint(-1, 2, (m, 5), generator=gen).float()
    h = torch.randint(-1, 2, (6, 5), generator=gen).float()
    members = torch.randperm(m, generator=gen).int()
    offsets = torch.tensor([0, 3, 3, 17, 40])
    lists = torch.randint(0, 4, (6, 2), generator=gen)
    for k, cap in ((4, 6), (8, 30)):
        s, r = list_tile_topk(h, w, None, members, offsets, lists, k, cap, True)
        s_ref, r_ref = list_tile_topk_ref(h, w, None, members, offsets, lists, k, cap, True)
        assert torch.equal(r, r_ref) and torch.equal(s, s_ref)
        for q in range(6):
            for j, c in enumerate(lists[q].tolist()):
                lo = int(offsets[c])
                read = members[lo : min(int(offsets[c + 1]), lo + cap)].long().tolist()
                z = {x: float(w[x] @ h[q]) for x in read}
                want = sorted(read, key=lambda x: (-z[x], x))[: min(k, cap)]
                assert r[q, j, : len(want)].tolist() == want


def test_merge_drops_repeats_keeps_the_larger_copy():
    s = torch.tensor([[[3.0, 1.0], [3.0, 2.0], [1.5, float("-inf")]]])
    ids = torch.tensor([[[7, 4], [7, 9], [4, -1]]])
    top_s, top = merge_table_topk(s, ids, 4)
    assert top.tolist() == [[7, 9, 4, -1]]  # 7 once; 4's copies 1.0 and 1.5: the larger kept
    assert top_s.tolist() == [[3.0, 2.0, 1.5, float("-inf")]]
    top_s, top = merge_table_topk(s, ids, 1)
    assert top.tolist() == [[7]]


def test_empty_queries_and_zero_candidates(monkeypatch):
    h, w, b, qc, sorted_ids, offsets = problem()
    for rows, k in ((0, 5), (3, 0), (0, 0)):
        want = lsh_scored_ref(h[:rows], w, b, qc[:rows], sorted_ids, offsets, k, 4)
        got = tiles(h[:rows], w, b, qc[:rows], sorted_ids, offsets, k, 4, monkeypatch)
        assert want[1].shape == got[1].shape == (rows, k)
        assert torch.equal(want[1], got[1]) and torch.equal(want[0], got[0])


def test_lsh_index_scored_search(monkeypatch):
    """LSHIndex(rank="score") on built tables: the CPU twin and the kernel route return the
    same ids; each is the float64 top-k of the query's capped buckets where the union holds
    k, padded to k valid distinct ids otherwise; masked classes never come back."""
    gen = torch.Generator().manual_seed(5)
    w, b = torch.randn(90, 12, generator=gen), torch.randn(90, generator=gen)
    b[:4] = float("-inf")
    h = torch.randn(6, 12, generator=gen)
    index = LSHIndex(12, 3, 4, seed=1, max_per_bucket=6, rank="score").build(w, b)
    k = 8
    top = index.search(h, k)
    codes = index.query_codes(h)
    s_ref, want = lsh_scored_ref(h, w, b, codes, index.sorted_ids, index.offsets, k, 6)
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")
    s, got = index.search_scored(h, k, 6, tiles=True)
    assert torch.equal(got, want)
    torch.testing.assert_close(s, s_ref, atol=1e-5, rtol=1e-5)
    full = (want >= 0).all(1)
    assert torch.equal(top[full], want[full])
    assert ((top >= 4).all(1)).all() and all(r.unique().numel() == k for r in top)
    z = (h.double() @ w.double().T + b.double()).gather(1, top)
    assert (z[full, 1:] <= z[full, :-1]).all()  # pairing: best first by the exact logit
    index.rank = "count"
    assert (index.search(h, k) >= 4).all()


def test_option_validation_and_explain():
    from triton_softmax import SampledSoftmaxLoss

    with pytest.raises(ValueError, match="lsh_rank"):
        IndexOptions(lsh_rank="collisions")
    with pytest.raises(ValueError, match="lsh_rank"):
        LSHIndex(8, 4, 2, rank="exact")
    with pytest.raises(ValueError, match="lsh_rank"):
        SampledSoftmaxLoss(100, 8, method="lsh", lsh_generator="clusters", lsh_rank="score")
    assert default_rank("cpu") == "count" and default_rank("cuda") == "score"
    kw = dict(method="lsh", lsh_generator="tables", num_candidates=8, num_uniform=8)
    layer = SampledSoftmaxLoss(5000, 8, lsh_rank="score", **kw)
    assert "ranked by exact logit" in layer.explain(16)
    layer = SampledSoftmaxLoss(5000, 8, **kw)
    assert "ranked by collision count" in layer.explain(16)  # weights on the CPU


# ---- on a GPU ------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scored_route_matches_twin_on_cuda(dtype):
    """The compiled route (tensor-core tl.dot for bf16) against the twin on the same CUDA
    inputs; pairing: every score is the float64 logit of its id; ids agree away from
    near-ties."""
    gen = torch.Generator().manual_seed(9)
    n_, d_, L_, K_, N_, k, B = 20000, 96, 8, 10, 300, 63, 32
    w = torch.randn(n_, d_, generator=gen).to(dtype).cuda()
    b = torch.randn(n_, generator=gen).to(dtype).cuda()
    b[11] = float("-inf")
    codes = torch.randint(0, 1 << K_, (n_, L_), generator=gen, dtype=torch.int32).cuda()
    sorted_ids, offsets = bucket_table_ref(codes, K_)
    h = torch.randn(N_, d_, generator=gen).to(dtype).cuda()
    qc = torch.randint(0, 1 << K_, (N_, L_), generator=gen, dtype=torch.int32).cuda()
    flat = tables_csr(sorted_ids, offsets)
    s, ids = search_table_tiles(h, w, b, sorted_ids, flat, qc, k, B)
    s_ref, ids_ref = lsh_scored_ref(h, w, b, qc, sorted_ids, offsets, k, B)
    assert torch.equal(ids < 0, ids_ref < 0)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(s, s_ref, atol=tol, rtol=tol)
    ok = ids >= 0
    z = (w[ids.clamp_min(0)].double() * h.double().unsqueeze(1)).sum(-1) + b[ids.clamp_min(0)]
    torch.testing.assert_close(s[ok].double(), z[ok].double(), atol=tol, rtol=tol)
    gap = torch.ones_like(ok)
    gap[:, 1:] &= (s_ref[:, :-1] - s_ref[:, 1:]) > 2 * tol
    gap[:, :-1] &= (s_ref[:, :-1] - s_ref[:, 1:]) > 2 * tol
    assert torch.equal(ids[gap & ok], ids_ref[gap & ok])
    assert all(r[r >= 0].unique().numel() == int((r >= 0).sum()) for r in ids.cpu())


@pytest.mark.cuda
def test_tables_scored_search_on_cuda_reads_nothing_back():
    """LSHIndex.search(rank="score") on CUDA (hash kernel, list-tile kernel over the tables,
    merge, padding) under torch.cuda.set_sync_debug_mode("error"): no host read; the same
    ids as the CPU twin on the same tables."""
    gen = torch.Generator().manual_seed(8)
    w, b = torch.randn(20000, 64, generator=gen), torch.randn(20000, generator=gen)
    h = torch.randn(256, 64, generator=gen)
    index = LSHIndex(64, 10, 8, seed=2).build(w.cuda(), b.cuda())
    assert index.rank is None and default_rank(h.cuda().device) == "score"
    hc = h.cuda()
    index.search(hc, 63)  # compile and autotune outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        top = index.search(hc, 63)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    cpu = LSHIndex(64, 10, 8, seed=2, rank="score").build(w, b)
    want = cpu.search(h, 63)
    same = (index.query_codes(hc).cpu() == cpu.query_codes(h)).all(1)
    assert same.float().mean() > 0.9
    full = (lsh_scored_ref(h, w, b, cpu.query_codes(h), cpu.sorted_ids, cpu.offsets, 63, 32)[1]
            >= 0).all(1)  # fmt: skip
    assert torch.equal(top.cpu()[same & full], want[same & full])
