"""kernels/list_scores.py (list_topk) against its twin, and ClusterIndex's two search paths.

The kernel runs under the interpreter on a hand-made CSR list index (empty lists, lists
shorter than k and not multiples of the block, a masked class, a NaN row); its oracle is the
twin on the same inputs upcast to float64. The CPU list-by-list loop (_score_lists) and the
fixed-shape path (_search_fixed, the CUDA path, here on the twin or the kernel) must agree with
the twin and with each other. The interpreter's tl.sort is slow: sizes are tiny.
"""

import pytest
import torch

from triton_softmax import ops
from triton_softmax.index.clusters import ClusterIndex
from triton_softmax.index.rerank import full_topk, pad_short_rows
from triton_softmax.kernels.list_scores import list_topk
from triton_softmax.reference.list_scores import list_topk_ref

SIZES = [0, 5, 37, 1, 0, 12, 40, 3]  # empty lists; none a multiple of 32


pytestmark = pytest.mark.usefixtures("poison_kernel_outputs")


def csr(sizes, n, gen):
    """(order, offsets) of lists with the given sizes over a random subset of n classes."""
    order = torch.randperm(n, generator=gen)[: sum(sizes)]
    offsets = torch.zeros(len(sizes) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(sizes), 0)
    return order, offsets


def problem(dtype=torch.float32, bias=True, N=3, p=2, d=19, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = sum(SIZES) + 4
    order, offsets = csr(SIZES, n, gen)
    w = torch.randn(n, d, generator=gen).to(dtype)
    b = torch.randn(n, generator=gen).to(dtype) if bias else None
    if bias:
        b[order[7]] = float("-inf")  # a masked class inside list 2
    w[order[20]] = float("nan")  # a NaN logit inside list 2
    h = torch.randn(N, d, generator=gen).to(dtype)
    lists = torch.stack([torch.randperm(len(SIZES), generator=gen)[:p] for _ in range(N)])
    # probed: the list with the masked and the NaN class, an empty one, the longest one
    lists[0, 0], lists[1, 1], lists[2, 0] = 2, 0, 6
    return h, w, b, order, offsets, lists


@pytest.mark.parametrize(
    "dtype, bias, k",
    [
        (torch.float32, True, 4),
        (torch.float32, False, 40),
        (torch.float16, True, 40),
        (torch.bfloat16, True, 4),
        (torch.bfloat16, False, 13),
    ],
)
def test_kernel_matches_twin(dtype, bias, k):
    h, w, b, order, offsets, lists = problem(dtype, bias)
    s, ids = list_topk(h, w, b, order, offsets, lists, k, max(SIZES))
    b64 = b.double() if bias else None
    s_ref, ids_ref = list_topk_ref(h.double(), w.double(), b64, order, offsets, lists, k, 40)
    assert s.shape == (3, 2, min(k, 40)) and s.dtype == torch.float32
    assert ids.dtype == torch.int64
    torch.testing.assert_close(s, s_ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(ids, ids_ref)
    # the contract itself: -1 exactly at -inf; the masked and the NaN class never kept
    assert torch.equal(ids < 0, s == float("-inf"))
    assert not torch.isin(ids, order[[7, 20]] if bias else order[[20]]).any()
    # rows sorted best first; an empty list is all -inf
    assert (s[:, :, 1:] <= s[:, :, :-1]).all()
    empty = (offsets[lists + 1] == offsets[lists]).unsqueeze(2)
    assert (ids.masked_select(empty) == -1).all()


def test_twin_against_direct_loop():
    """The oracle itself checked: per (query, list) the k best by a Python loop."""
    h, w, b, order, offsets, lists = problem(torch.float32, True, seed=3)
    k = 6
    s, ids = list_topk_ref(h, w, b, order, offsets, lists, k, 40)
    for i in range(3):
        for j in range(2):
            c = int(lists[i, j])
            members = order[offsets[c] : offsets[c + 1]]
            z = (w[members].double() @ h[i].double() + b[members].double()).nan_to_num(
                nan=float("-inf")
            )
            ok = torch.isfinite(z)
            want = sorted(zip(z[ok].tolist(), members[ok].tolist()), reverse=True)[:k]
            got = [(a, c) for a, c in zip(s[i, j].tolist(), ids[i, j].tolist()) if c >= 0]
            assert [c for _, c in got] == [c for _, c in want]
            assert torch.allclose(
                torch.tensor([a for a, _ in got]),
                torch.tensor([a for a, _ in want]).float(),
                atol=1e-4,
            )


def test_kernel_edge_shapes():
    h, w, b, order, offsets, lists = problem()
    s, ids = list_topk(h, w, b, order, offsets, lists, 0, 40)
    assert s.shape == (3, 2, 0) and ids.shape == (3, 2, 0)
    s, ids = list_topk(h[:0], w, b, order, offsets, lists[:0], 4, 40)
    assert s.shape == (0, 2, 4)
    empty = torch.zeros(0, dtype=torch.int64)
    s, ids = list_topk(h, w, b, empty, torch.zeros(9, dtype=torch.int64), lists, 4, 0)
    assert s.shape == (3, 2, 0)
    s, ids = list_topk(h, w, b, empty, torch.zeros(9, dtype=torch.int64), lists, 4, 3)
    assert (s == float("-inf")).all() and (ids == -1).all()
    with pytest.raises(ValueError, match="lists"):
        list_topk(h, w, b, order, offsets, lists[:2], 4, 40)
    with pytest.raises(TypeError, match="order"):
        list_topk(h, w, b, order.int(), offsets, lists, 4, 40)


def test_launcher_refuses_float64_and_oversized_k_and_ops_routes_them_to_the_twin(monkeypatch):
    from triton_softmax.kernels import list_scores as kmod

    h, w, b, order, offsets, lists = problem()
    with pytest.raises(TypeError, match="ops.list_topk"):
        list_topk(h.double(), w.double(), b.double(), order, offsets, lists, 4, 40)
    monkeypatch.setattr(kmod, "MAX_KEEP", 4)
    assert not kmod.list_topk_fits(h, w, b, order, offsets, lists, 5, 40)
    with pytest.raises(ValueError, match="list_topk_fits"):
        list_topk(h, w, b, order, offsets, lists, 5, 40)
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")  # the interpreter, where it fits
    for args in ((h.double(), w.double(), b.double()), (h, w, b)):  # fp64; k' = 5 > MAX_KEEP
        got = ops.list_topk(*args, order, offsets, lists, 5, 40)
        want = list_topk_ref(*args, order, offsets, lists, 5, 40)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_route_runs_twin_on_cpu():
    h, w, b, order, offsets, lists = problem()
    s, ids = ops.list_topk(h, w, b, order, offsets, lists, 5, 40)
    s_ref, ids_ref = list_topk_ref(h, w, b, order, offsets, lists, 5, 40)
    assert torch.equal(s, s_ref) and torch.equal(ids, ids_ref)


# ---- ClusterIndex: the CPU loop, the fixed-shape path, and the twin --------------------------


def handmade_index(live_rerank=True, bias=True, d=12, seed=0):
    """A built ClusterIndex whose lists are replaced by SIZES (empty and short lists), over
    weights with a masked class (bias -inf, so not selectable) and random routing."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(SIZES) + 4
    w = torch.randn(n, d, generator=gen)
    b = torch.randn(n, generator=gen) if bias else None
    order, offsets = csr(SIZES, n, gen)
    if bias:
        b[order[7]] = float("-inf")
    index = ClusterIndex(d, num_lists=4, nprobe=3, live_rerank=live_rerank).build(w, b)
    index.order, index.offsets, index.max_list = order, offsets, max(SIZES)
    index.centroids = torch.randn(len(SIZES), index.rows_dim + 1, generator=gen)
    index.route = torch.randn(len(SIZES), index.rows_dim, generator=gen)
    if not live_rerank:
        index._copy_rows()  # in the replaced list order
    return index, w, b


@pytest.mark.parametrize("live_rerank", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("k", [3, 20])
def test_score_lists_loop_matches_twin(live_rerank, bias, k):
    index, w, b = handmade_index(live_rerank, bias)
    h = torch.randn(7, 12, generator=torch.Generator().manual_seed(1))
    lists = index.probe_lists(h)
    z, ids = index._score_lists(h, lists, k)
    s_ref, ids_ref = list_topk_ref(h, w, b, index.order, index.offsets, lists, k, max(SIZES))
    # the loop scores whole lists (L = the largest list per probed list); the twin keeps
    # each list's k best: compare the loop's k best of every block with the twin's
    z, ids = z.view(7, -1, max(SIZES)), ids.view(7, -1, max(SIZES))
    for i in range(7):
        for j in range(lists.shape[1]):
            ok = torch.isfinite(z[i, j])
            lst = int(lists[i, j])  # its slots past the list's end: id -1, score -inf
            size = int(index.offsets[lst + 1] - index.offsets[lst])
            assert (ids[i, j][:size] >= 0).all() and (ids[i, j][size:] == -1).all()
            assert torch.isneginf(z[i, j][size:]).all()
            got = sorted(zip(z[i, j][ok].tolist(), ids[i, j][ok].tolist()), reverse=True)[:k]
            ok_ref = ids_ref[i, j] >= 0
            want = list(zip(s_ref[i, j][ok_ref].tolist(), ids_ref[i, j][ok_ref].tolist()))
            assert [c for _, c in got] == [c for _, c in want]
            assert torch.allclose(
                torch.tensor([a for a, _ in got]), torch.tensor([a for a, _ in want]), atol=1e-5
            )


def check_search(index, h, k, top, fixed, masked):
    """fixed (the fixed-shape path) against top (the CPU loop): equal where the loop found k
    list members; otherwise both hold min(k, selectable) distinct ids, none masked."""
    z_full = h @ index.weight.T + (index.bias if index.bias is not None else 0)
    selectable = int(torch.isfinite(z_full[0]).sum())
    assert fixed.shape == top.shape == (h.shape[0], k)
    for i in range(h.shape[0]):
        for row in (top[i], fixed[i]):
            valid = row[row >= 0]
            assert valid.numel() == min(k, selectable)
            assert valid.unique().numel() == valid.numel()
            assert not torch.isin(valid, masked).any()
    lists = index.probe_lists(h)
    _, ids = list_topk_ref(
        h, index.weight, index.bias, index.order, index.offsets, lists, k, index.max_list
    )
    full = (ids >= 0).flatten(1).sum(1) >= k
    assert full.any() and not full.all(), "the problem must have full and short rows"
    for i in torch.nonzero(full).flatten().tolist():
        assert torch.equal(fixed[i], top[i])


@pytest.mark.parametrize("live_rerank", [True, False])
@pytest.mark.parametrize("k", [4, 30])
@pytest.mark.parametrize("path", ["fixed", "tiles"])
def test_fixed_shape_searches_match_loop(live_rerank, k, path):
    """_search_fixed (ops.list_topk) and _search_tiles (ops.list_tile_topk, the CUDA path;
    here its twin; its kernel: tests/test_list_tiles.py) give the loop's ids on every full
    row of the handmade lists."""
    index, w, b = handmade_index(live_rerank)
    h = torch.randn(9, 12, generator=torch.Generator().manual_seed(2))
    top = index.search_lists(h, k)
    search = index._search_fixed if path == "fixed" else index._search_tiles
    got = search(h, index.probe_lists(h), k, torch.Generator().manual_seed(0))
    check_search(index, h, k, top, got, index.order[[7]])


@pytest.mark.parametrize("live_rerank", [True, False])
def test_list_tile_scores_equal_the_loops_scores(live_rerank):
    """Every slot of the (N, p x L) buffer: the loop's exact logit, -inf in the same slots
    (empty slots, the masked class); chunks of queries (TILE_SCORES) leave it unchanged."""
    from triton_softmax.index.list_tiles import list_tile_scores

    index, w, b = handmade_index(live_rerank)
    h = torch.randn(9, 12, generator=torch.Generator().manual_seed(3))
    lists = index.probe_lists(h)
    want = index._list_scores(h, lists)
    if live_rerank:
        rows, bias, members = index.weight, index.bias, index.order
    else:
        (rows, bias), members = index._copied_rows(), torch.arange(index.order.numel())
    for tile in (1, 2, 64):
        got = list_tile_scores(h, rows, bias, members, index.offsets, lists, index.max_list, tile)
        assert torch.equal(torch.isinf(got), torch.isinf(want))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # one query: fewer (query, list) pairs (3) than lists (8), so the tile bound is N p based
    one = list_tile_scores(h[:1], rows, bias, members, index.offsets, lists[:1], index.max_list)
    torch.testing.assert_close(one, index._list_scores(h[:1], lists[:1]), atol=1e-5, rtol=1e-5)


def test_search_fixed_kernel_under_interpreter(monkeypatch):
    """The same, with the kernel (TRITON_SOFTMAX_IMPL=triton runs it on CPU tensors here)."""
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "triton")
    index, w, b = handmade_index(True)
    h = torch.randn(4, 12, generator=torch.Generator().manual_seed(4))
    fixed = index._search_fixed(h, index.probe_lists(h), 8, None)
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", "torch")
    top = index.search_lists(h, 8)
    check_search(index, h, 8, top, fixed, index.order[[7]])


def test_pad_short_rows_small_pool():
    """Rows with no list member get the whole pool when it is smaller than k; full rows stay."""
    gen = torch.Generator().manual_seed(5)
    w, h = torch.randn(10, 4, generator=gen), torch.randn(3, 4, generator=gen)
    pool = torch.tensor([1, 4, 6])
    top = torch.tensor([[2, 3, 5, 7, 8], [-1, -1, -1, -1, -1], [4, -1, -1, -1, -1]])
    scores = torch.where(top >= 0, (h @ w.T).gather(1, top.clamp_min(0)), float("-inf"))
    out = pad_short_rows(h, w, None, top, scores, pool, 5, gen)
    assert torch.equal(out[0], top[0])
    assert sorted(out[1][out[1] >= 0].tolist()) == [1, 4, 6] and (out[1][3:] == -1).all()
    assert sorted(out[2][out[2] >= 0].tolist()) == [1, 4, 6]
    # scored exactly: best first
    z = (h @ w.T)[1, out[1][:3]]
    assert (z[1:] <= z[:-1]).all()


def test_real_build_paths_agree():
    """An ordinary build (k-means lists): the fixed path equals the loop on every full row."""
    gen = torch.Generator().manual_seed(6)
    w, b = torch.randn(300, 16, generator=gen), torch.randn(300, generator=gen)
    b[:5] = float("-inf")
    index = ClusterIndex(16, num_lists=12, nprobe=3).build(w, b)
    h = torch.randn(10, 16, generator=gen)
    top = index.search_lists(h, 16)
    fixed = index._search_fixed(h, index.probe_lists(h), 16, None)
    assert torch.equal(top, fixed)
    assert torch.equal(top, index._search_tiles(h, index.probe_lists(h), 16, None))
    assert not torch.isin(fixed, torch.arange(5)).any()
    # and the exact top-16 is mostly found (3 of 12 lists probed)
    exact = full_topk(h, w, b, 16)
    hit = torch.isin(fixed, exact).float().mean()
    assert hit > 0.3


@pytest.mark.cuda
def test_cuda_search_is_sync_free():
    """On CUDA, search_lists takes the list tiles (index/list_tiles.py, since the 2026-12-01
    H200 run) with no host read (sync debug mode raises on one) and returns the CPU loop's
    ids on the same lists."""
    gen = torch.Generator().manual_seed(7)
    w, b = torch.randn(5000, 64, generator=gen), torch.randn(5000, generator=gen)
    b[:7] = float("-inf")
    h = torch.randn(33, 64, generator=gen)
    cpu = ClusterIndex(64, num_lists=70, nprobe=5).build(w, b)
    dev = ClusterIndex(64, num_lists=70, nprobe=5).build(w.cuda(), b.cuda())
    dev.load_state_dict(cpu.state_dict())
    dev.build(w.cuda(), b.cuda())
    hc = h.cuda()
    dev.search_lists(hc, 40)  # autotune's first call benchmarks (it syncs): warm it up
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = dev.search_lists(hc, 40)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    lists = cpu.probe_lists(h)
    assert torch.equal(dev.probe_lists(hc).cpu().sort(1).values, lists.sort(1).values)
    want = cpu.search_lists(h, 40)
    assert torch.equal(got.cpu(), want)
