"""kernels/list_tiles.py (list_tile_topk) against its twin and a float64 loop, the merge of its
candidates (index/list_tiles.merge_list_topk), and ClusterIndex's CUDA route (_search_tiles)
run here on the kernel under the interpreter.

Adversarial inputs: equal scores inside a list and across lists (integer-valued rows, so every
dot is exact in fp32 whatever the summation order, and the tie rule decides: the smaller
position / class id first), -0.0 against +0.0, a NaN row, a masked class (-inf bias), empty
lists, lists shorter than k, k larger than the probed union, odd sizes. Pairing: every
returned score is the float64 dot of the returned row. The interpreter's tl.sort is slow
(seconds per 1,024 keys): sizes are tiny.
"""

import pytest
import torch

from triton_softmax import ops
from triton_softmax.index.clusters import ClusterIndex
from triton_softmax.index.list_tiles import merge_list_topk
from triton_softmax.kernels import list_tiles as kmod
from triton_softmax.kernels.list_tiles import list_tile_topk
from triton_softmax.reference.list_tiles import list_tile_topk_ref

SIZES = [0, 5, 21, 1, 0, 12, 3]  # empty lists; none a multiple of a block
L = max(SIZES)

pytestmark = pytest.mark.usefixtures("poison_kernel_outputs")


def problem(dtype=torch.float32, bias=True, N=5, p=3, d=19, seed=0, integer=False):
    """(h, rows, bias, members, offsets, lists): lists over a random subset of the rows; a
    masked row (bias -inf) and a NaN row in list 2; integer=True: small integers, ties."""
    gen = torch.Generator().manual_seed(seed)
    m = sum(SIZES) + 4
    members = torch.randperm(m, generator=gen)[: sum(SIZES)]
    offsets = torch.zeros(len(SIZES) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(SIZES), 0)
    if integer:  # entries in {-1, 0, 1}: many equal logits, and zero logits
        w = torch.randint(-1, 2, (m, d), generator=gen).float()
        h = torch.randint(-1, 2, (N, d), generator=gen).float()
        b = torch.randint(-1, 2, (m,), generator=gen).float() if bias else None
        w[members[5:9]] = w[members[5]].clone()  # four equal rows inside list 2
        w[members[30]] = w[members[5]].clone()  # and one in list 5 (members[27:39])
        if bias:
            b[members[5:9]] = b[members[5]].clone()
            b[members[30]] = b[members[5]].clone()
    else:
        w = torch.randn(m, d, generator=gen)
        h = torch.randn(N, d, generator=gen)
        b = torch.randn(m, generator=gen) if bias else None
    if bias:
        b[members[9]] = float("-inf")  # masked, in list 2
    w[members[12]] = float("nan")  # a NaN logit, in list 2
    lists = torch.stack([torch.randperm(len(SIZES), generator=gen)[:p] for _ in range(N)])
    lists[0, 0], lists[1, 1], lists[2, 0] = 2, 0, 5  # the bad rows, an empty list, list 5
    return h.to(dtype), w.to(dtype), b.to(dtype) if bias else None, members, offsets, lists


def loop_oracle(h, w, b, members, offsets, lists, k):
    """Per (query, list): [(score, position)] of the k best by a float64 Python loop, ties by
    position; masked / NaN rows dropped."""
    out = []
    for i in range(lists.shape[0]):
        row = []
        for c in lists[i].tolist():
            r = members[offsets[c] : offsets[c + 1]]
            z = w[r].double() @ h[i].double()
            if b is not None:
                z = z + b[r].double()
            pairs = [(s, j) for j, s in enumerate(z.tolist()) if s == s and s != float("-inf")]
            row.append(sorted(pairs, key=lambda t: (-t[0], t[1]))[:k])
        out.append(row)
    return out


def check_against_loop(s, pos, want):
    for i, row in enumerate(want):
        for j, pairs in enumerate(row):
            got = [(a, q) for a, q in zip(s[i, j].tolist(), pos[i, j].tolist()) if q >= 0]
            assert [q for _, q in got] == [q for _, q in pairs], (i, j)
            for (a, _), (e, _) in zip(got, pairs):
                assert abs(a - e) <= 1e-4 * (1 + abs(e))
            # the rest: (-inf, -1) exactly
            rest = slice(len(pairs), None)
            assert (pos[i, j, rest] == -1).all() and torch.isneginf(s[i, j, rest]).all()


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("k", [4, 30])
def test_twin_against_float64_loop(integer, bias, k):
    h, w, b, members, offsets, lists = problem(bias=bias, integer=integer)
    s, pos = list_tile_topk_ref(h, w, b, members, offsets, lists, k, L)
    assert s.shape == pos.shape == (5, 3, min(k, L))
    check_against_loop(s, pos, loop_oracle(h, w, b, members, offsets, lists, k))


@pytest.mark.parametrize(
    "dtype, bias, k, integer",
    [
        (torch.float32, True, 4, True),
        (torch.float32, False, 30, False),
        (torch.bfloat16, True, 9, False),
        (torch.float16, True, 4, True),
    ],
)
def test_kernel_matches_twin_and_loop(dtype, bias, k, integer):
    h, w, b, members, offsets, lists = problem(dtype, bias, integer=integer)
    s, pos = list_tile_topk(h, w, b, members, offsets, lists, k, L)
    s_ref, pos_ref = list_tile_topk_ref(h, w, b, members, offsets, lists, k, L)
    assert s.dtype == torch.float32 and pos.dtype == torch.int64
    assert torch.equal(pos, pos_ref)  # integer data: exact ties; random: no near-ties here
    torch.testing.assert_close(s, s_ref, atol=1e-4, rtol=1e-4)
    check_against_loop(s, pos, loop_oracle(h, w, b, members, offsets, lists, k))
    # no -0.0 comes back (it ties with +0.0, and is stored as +0.0)
    zero = s == 0
    assert not torch.signbit(s[zero]).any()
    if integer:
        assert zero.any(), "the integer problem must hold zero logits"


def test_negative_zero_ties_with_positive_zero():
    """Logits -0.0 and +0.0 are equal: the smaller position first, whichever sign it has."""
    h = torch.tensor([[1.0, 1.0]])
    w = torch.tensor([[-0.0, -0.0], [0.0, 0.0], [-0.0, -0.0], [0.0, 0.0]])
    b = torch.tensor([-0.0, 0.0, -0.0, 0.0])  # rows 0 and 2: -0.0 in exact arithmetic
    members, offsets = torch.arange(4), torch.tensor([0, 4])
    lists = torch.zeros(1, 1, dtype=torch.int64)
    for fn in (list_tile_topk, list_tile_topk_ref):
        s, pos = fn(h, w, b, members, offsets, lists, 3, 4)
        assert pos.tolist() == [[[0, 1, 2]]]
        assert not torch.signbit(s).any()


def test_kernel_edge_shapes_and_validation():
    h, w, b, members, offsets, lists = problem()
    s, pos = list_tile_topk(h, w, b, members, offsets, lists, 0, L)
    assert s.shape == (5, 3, 0)
    s, pos = list_tile_topk(h[:0], w, b, members, offsets, lists[:0], 4, L)
    assert s.shape == (0, 3, 4)
    empty = torch.zeros(0, dtype=torch.int64)
    s, pos = list_tile_topk(h, w, b, empty, torch.zeros(8, dtype=torch.int64), lists, 4, 3)
    assert (s == float("-inf")).all() and (pos == -1).all()
    # one query, p = 1: fewer pairs than lists, the tile bound from N p
    s, pos = list_tile_topk(h[:1], w, b, members, offsets, lists[:1, :1], 4, L)
    want = list_tile_topk_ref(h[:1], w, b, members, offsets, lists[:1, :1], 4, L)
    assert torch.equal(pos, want[1])
    with pytest.raises(ValueError, match="lists"):
        list_tile_topk(h, w, b, members, offsets, lists[:2], 4, L)
    with pytest.raises(TypeError, match="members"):
        list_tile_topk(h, w, b, members.short(), offsets, lists, 4, L)  # int32: the tables
    with pytest.raises(ValueError, match="bias"):
        list_tile_topk(h, w, b[:3], members, offsets, lists, 4, L)
    with pytest.raises(TypeError, match="ops.list_tile_topk"):
        list_tile_topk(h.double(), w.double(), b.double(), members, offsets, lists, 4, L)


def test_oversized_k_and_float64_run_the_twin(monkeypatch):
    h, w, b, members, offsets, lists = problem()
    monkeypatch.setattr(kmod, "MAX_KEEP", 4)
    assert not kmod.list_tile_topk_fits(h, w, b, members, offsets, lists, 5, L)
    with pytest.raises(ValueError, match="list_tile_topk_fits"):
        list_tile_topk(h, w, b, members, offsets, lists, 5, L)
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")  # the interpreter, where it fits
    for args in ((h.double(), w.double(), b.double()), (h, w, b)):
        got = ops.list_tile_topk(*args, members, offsets, lists, 5, L)
        want = list_tile_topk_ref(*args, members, offsets, lists, 5, L)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


# ---- the merge -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 6, 40])
def test_merge_is_the_top_k_of_the_union_with_the_tie_rule(k):
    """merge_list_topk over the twin's candidates = a float64 sort of every probed member by
    (score descending, class id ascending); k past the union: (-inf, -1) padding."""
    h, w, b, members, offsets, lists = problem(integer=True, seed=1)
    # class ids other than the row numbers (the merge maps them), increasing inside a list
    # as ClusterIndex's lists keep them (so position ties and id ties agree)
    order = 1000 + 3 * torch.arange(members.numel())
    s, pos = list_tile_topk_ref(h, w, b, members, offsets, lists, k, L)
    top_s, top = merge_list_topk(s, pos, lists, offsets, order, k)
    assert top_s.shape == top.shape == (5, k)
    for i in range(5):
        cand = []
        for c in lists[i].tolist():
            for j in range(int(offsets[c]), int(offsets[c + 1])):
                r = int(members[j])
                z = float(w[r].double() @ h[i].double() + b[r].double())
                if z == z and z != float("-inf"):
                    cand.append((-z, int(order[j])))
        want = sorted(cand)[:k]
        got = [(a, c) for a, c in zip(top_s[i].tolist(), top[i].tolist()) if c >= 0]
        assert [c for _, c in got] == [c for _, c in want]
        assert [a for a, _ in got] == [-z for z, _ in want]  # integer data: exact
        assert (top[i, len(want) :] == -1).all()
        assert torch.isneginf(top_s[i, len(want) :]).all()
    if k == 40:
        assert (top == -1).any(), "k past some union"


# ---- ClusterIndex: the CUDA route under the interpreter ------------------------------------


def small_index(live_rerank, seed=6):
    gen = torch.Generator().manual_seed(seed)
    w, b = torch.randn(150, 16, generator=gen), torch.randn(150, generator=gen)
    b[:5] = float("-inf")
    index = ClusterIndex(16, num_lists=7, nprobe=2, live_rerank=live_rerank).build(w, b)
    return index, w, b, gen


@pytest.mark.parametrize("live_rerank", [True, False])
def test_search_tiles_kernel_equals_cpu_loop(monkeypatch, live_rerank):
    """_search_tiles with the kernel (TRITON_SOFTMAX_IMPL=triton on CPU tensors) returns the
    CPU list-by-list loop's ids; with k past some probed unions both pad to k valid ids."""
    index, w, b, gen = small_index(live_rerank)
    h = torch.randn(6, 16, generator=gen)
    lists = index.probe_lists(h)
    for k in (5, 60):
        top = index.search_lists(h, k)
        monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")
        got = index._search_tiles(h, lists, k, torch.Generator().manual_seed(0))
        monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "torch")
        sizes = (index.offsets[lists + 1] - index.offsets[lists]).sum(1)
        for i in range(6):
            assert (got[i] >= 0).all() and got[i].unique().numel() == k
            assert not torch.isin(got[i], torch.arange(5)).any()
            if sizes[i] >= k:
                assert torch.equal(got[i], top[i])
        if k == 60:
            assert (sizes < k).any(), "k past some probed union"
        # pairing: the k best by exact logit, best first
        z = (h.double() @ w.double().T + b.double()).gather(1, got)
        full = sizes >= k
        assert (z[full, 1:] <= z[full, :-1]).all()


# ---- on a GPU ------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k", [7, 64, 300])
def test_kernel_matches_twin_on_cuda(dtype, k):
    """The compiled kernel (tensor-core tl.dot for bf16, ieee fp32 otherwise) against its twin
    on the same inputs; pairing: every score is the float64 dot of its row."""
    gen = torch.Generator().manual_seed(7)
    M, C, d, N, p = 3000, 40, 96, 200, 5
    rows = torch.randn(M, d, generator=gen).to(dtype).cuda()
    bias = torch.randn(M, generator=gen).to(dtype).cuda()
    bias[11] = float("-inf")
    assign = torch.randint(C, (M,), generator=gen)
    members = torch.argsort(assign, stable=True).cuda()
    offsets = torch.zeros(C + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.bincount(assign, minlength=C), 0)
    offsets = offsets.cuda()
    max_list = int((offsets[1:] - offsets[:-1]).max())
    h = torch.randn(N, d, generator=gen).to(dtype).cuda()
    lists = torch.stack([torch.randperm(C, generator=gen)[:p] for _ in range(N)]).cuda()
    s, pos = list_tile_topk(h, rows, bias, members, offsets, lists, k, max_list)
    s_ref, pos_ref = list_tile_topk_ref(h, rows, bias, members, offsets, lists, k, max_list)
    assert torch.equal(pos < 0, pos_ref < 0)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(s, s_ref, atol=tol, rtol=tol)
    ok = pos >= 0
    r = members[(offsets[lists].unsqueeze(2) + pos.clamp_min(0))]
    z = (rows[r].double() * h.double().unsqueeze(1).unsqueeze(1)).sum(-1) + bias[r].double()
    torch.testing.assert_close(s[ok].double(), z[ok], atol=tol, rtol=tol)
    # ids agree wherever the twin's neighbouring scores are apart by more than the tolerance
    gap = torch.ones_like(s_ref, dtype=torch.bool)
    gap[..., 1:] &= (s_ref[..., :-1] - s_ref[..., 1:]) > 2 * tol
    gap[..., :-1] &= (s_ref[..., :-1] - s_ref[..., 1:]) > 2 * tol
    assert torch.equal(pos[gap & ok], pos_ref[gap & ok])


@pytest.mark.cuda
def test_clusters_search_on_cuda_reads_nothing_back():
    """ClusterIndex.search on CUDA (probe GEMM, list tiles kernel, merge, padding) under
    torch.cuda.set_sync_debug_mode("error"): no host read; same ids as the CPU loop."""
    gen = torch.Generator().manual_seed(8)
    w, b = torch.randn(20000, 64, generator=gen), torch.randn(20000, generator=gen)
    h = torch.randn(256, 64, generator=gen)
    index = ClusterIndex(64, nprobe=4).build(w.cuda(), b.cuda())
    hc = h.cuda()
    index.search(hc, 100)  # compile and autotune outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        top = index.search(hc, 100, torch.Generator(device="cuda").manual_seed(0))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    cpu = ClusterIndex(64, nprobe=4)
    cpu.load_state_dict(index.state_dict())  # the same lists on the CPU
    cpu.build(w, b)
    want = cpu.search(h, 100)
    same = (index.probe_lists(hc).cpu() == cpu.probe_lists(h)).all(1)
    assert same.float().mean() > 0.9
    assert torch.equal(top.cpu()[same], want[same])
