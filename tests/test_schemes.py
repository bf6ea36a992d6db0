"""Candidate schemes, proposal samplers (log-Q), accidental hits, drift check, torch.compile."""

import math

import pytest
import torch
import torch.nn.functional as F

from triton_softmax import SampledSoftmaxLoss, sampled_softmax_from_candidates
from triton_softmax.autograd import SharedCandidatesFunction
from triton_softmax.candidates import build_candidates_q, build_shared_candidates
from triton_softmax.samplers import CategoricalSampler, LogUniformSampler, UniformSampler

SCHEMES = ["per_example", "shared_samples", "batch_union"]


def _problem(N=6, n=40, d=5, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=g, dtype=torch.float64)
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
    y = torch.randint(0, n, (N,), generator=g)
    ret = torch.randint(-1, n, (N, 7), generator=g)
    return h, W, b, y, ret


def test_log_uniform_sampler_matches_its_q():
    s = LogUniformSampler(50)
    q = s.log_q(torch.arange(50)).double().exp()
    assert abs(float(q.sum()) - 1.0) < 1e-6
    ids = s.sample((200_000,), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(ids, minlength=50).double() / 200_000
    assert (freq - q).abs().max() < 5e-3


def test_log_q_estimator_matches_its_formula_in_float64():
    """loss_i = log(sum_{S_i} e^z + sum_{t in T_i, t not in S_i} e^{z_t} / (|T| q(t))) - z_y."""
    h, W, b, y, ret = _problem(bias=True)
    n, T = W.shape[0], 9
    sampler = LogUniformSampler(n)
    ids, logw = build_candidates_q(ret, y, n, T, sampler, torch.Generator().manual_seed(3))
    loss = sampled_softmax_from_candidates(
        h,
        W,
        y,
        ret,
        b,
        num_uniform=T,
        sampler="log_uniform",
        reduction="none",
        generator=torch.Generator().manual_seed(3),
    )
    z = h @ W.T + b
    q = sampler.log_q(torch.arange(n)).double().exp()
    for i in range(h.shape[0]):
        S = {int(j) for j in ret[i] if j >= 0} | {int(y[i])}
        Zs = sum(math.exp(z[i, j]) for j in S)
        Zt = sum(math.exp(z[i, t]) / (T * q[t]) for t in ids[i, -T:].tolist() if t not in S)
        expect = math.log(Zs + Zt) - float(z[i, y[i]])
        # log-weights are stored in fp32 (cand_logw), the rest is fp64
        assert abs(float(loss[i]) - expect) < 1e-6 * abs(expect)


def test_accidental_hits_removed_or_kept():
    n, T = 5, 400
    ret = torch.tensor([[0, 1]])
    y = torch.tensor([2])
    kw = dict(generator=torch.Generator().manual_seed(0))
    ids, logw = build_candidates_q(
        ret, y, n, T, UniformSampler(n), remove_accidental_hits=True, **kw
    )
    hits = torch.isin(ids[0, 3:], torch.tensor([0, 1, 2]))
    assert hits.any() and torch.isinf(logw[0, 3:][hits]).all()
    assert torch.isfinite(logw[0, 3:][~hits]).all()
    kw = dict(generator=torch.Generator().manual_seed(0))
    _, kept = build_candidates_q(
        ret, y, n, T, UniformSampler(n), remove_accidental_hits=False, **kw
    )
    assert torch.isfinite(kept).all()
    torch.testing.assert_close(kept[0, 3:], torch.full((T,), math.log(n / T)))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("sampler", ["uniform", "log_uniform", "weights"])
def test_every_scheme_is_unbiased_for_the_partition_function(scheme, sampler):
    """E[Z-hat] = Z: the mean of exp(lse) over many draws matches the exact sum (4 std errs)."""
    h, W, b, y, ret = _problem(N=3, n=30, d=4, seed=1)
    W = W * 0.5
    spec = (
        torch.rand(30, generator=torch.Generator().manual_seed(9)) + 0.1
        if sampler == "weights"
        else sampler
    )
    draws = []
    for k in range(3000):
        loss = sampled_softmax_from_candidates(
            h,
            W,
            y,
            ret[:, :2],
            num_uniform=4,
            scheme=scheme,
            sampler=spec,
            reduction="none",
            generator=torch.Generator().manual_seed(k),
        )
        z_y = (h * W[y]).sum(1)
        draws.append(torch.exp(loss + z_y))  # Z-hat per row
    zhat = torch.stack(draws)
    Z = torch.exp(torch.logsumexp(h @ W.T, 1))
    err = (zhat.mean(0) - Z).abs()
    se = zhat.std(0) / math.sqrt(len(draws))
    assert (err < 4 * se + 1e-9).all(), (err, se)


@pytest.mark.parametrize("union", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_shared_function_gradcheck_and_sparse_equals_dense(union, bias):
    h, W, b, y, ret = _problem(N=4, n=15, d=3, bias=bias)
    s_ids, s_logw, sh_ids, sh_logw = build_shared_candidates(
        ret, y, 15, 5, UniformSampler(15), torch.Generator().manual_seed(1), union=union
    )
    h.requires_grad_(True)
    W.requires_grad_(True)
    params = (h, W) + ((b.requires_grad_(True),) if bias else ())

    def fn(h, W, b=None):
        return SharedCandidatesFunction.apply(
            h, W, b, s_ids, s_logw.double(), sh_ids, sh_logw.double(), y, False, 0.0
        )

    assert torch.autograd.gradcheck(fn, params)
    dense = torch.autograd.grad(fn(*params).sum(), params[1:])
    sparse_out = SharedCandidatesFunction.apply(
        *params[:2],
        params[2] if bias else None,
        s_ids,
        s_logw.double(),
        sh_ids,
        sh_logw.double(),
        y,
        True,
        0.0,
    )
    sparse = torch.autograd.grad(sparse_out.sum(), params[1:])
    for a, s in zip(dense, sparse):
        assert s.is_sparse
        torch.testing.assert_close(a, s.to_dense())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_schemes_exact_when_candidates_cover_everything(scheme):
    h, W, b, y, _ = _problem(n=12)
    everything = torch.arange(12).expand(h.shape[0], 12)
    loss = sampled_softmax_from_candidates(
        h, W, y, everything, num_uniform=5, scheme=scheme, sampler="log_uniform", reduction="sum"
    )
    torch.testing.assert_close(loss, F.cross_entropy(h @ W.T, y, reduction="sum"))


def test_categorical_sampler_validates():
    with pytest.raises(ValueError, match="> 0 for every class"):
        CategoricalSampler(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="shape"):
        SampledSoftmaxLoss(10, 4, sampler=torch.ones(9))
    with pytest.raises(ValueError, match="candidate_scheme"):
        SampledSoftmaxLoss(10, 4, candidate_scheme="tiles")


def _teacher_accuracy(layer: SampledSoftmaxLoss) -> float:
    """Train `layer` (500 classes, d=16) 3 epochs with SGD on a teacher problem; exact P@1."""
    g = torch.Generator().manual_seed(0)
    n, d = 500, 16
    centers = torch.randn(n, d, generator=g)
    y = torch.randint(0, n, (2048,), generator=g)
    x = centers[y] + 0.2 * torch.randn(2048, d, generator=g)
    opt = torch.optim.SGD(layer.parameters(), lr=8.0)
    for _ in range(3):
        for i in range(0, 2048, 64):
            opt.zero_grad()
            layer(x[i : i + 64], y[i : i + 64]).backward()
            opt.step()
    return float((layer.topk(x, 1, exact=True)[1][:, 0] == y).float().mean())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_module_trains_with_each_scheme(scheme):
    torch.manual_seed(0)
    n, d = 500, 16
    layer = SampledSoftmaxLoss(
        n,
        d,
        method="lsh",
        num_candidates=16,
        num_uniform=32,
        candidate_scheme=scheme,
        sparse_grad=True,
        refresh_every=10,
    )
    acc = _teacher_accuracy(layer)
    assert acc > 0.9, acc


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


def _compiled_vs_eager(backend, num_uniform):
    torch.manual_seed(0)
    N, n, d = 16, 300, 8
    W = torch.randn(n, d, requires_grad=True)
    h, y = torch.randn(N, d), torch.randint(0, n, (N,))
    y[3] = -100
    ret = torch.randint(-1, n, (N, 12))

    def step(h, y, ret):
        from triton_softmax import sampled_softmax_cross_entropy

        a = sampled_softmax_from_candidates(h, W, y, ret, num_uniform=num_uniform)
        return a + sampled_softmax_cross_entropy(h, W, y, method="full")

    compiled = torch.compile(step, fullgraph=True, backend=backend)  # fullgraph: no graph break
    out = []
    for fn in (compiled, step):
        torch.manual_seed(1)
        W.grad = None
        loss = fn(h, y, ret)
        loss.backward()
        out.append((loss.detach(), W.grad.clone()))
    return out


def test_torch_compile_training_step_matches_eager_aot():
    (lc, gc), (le, ge) = _compiled_vs_eager("aot_eager", num_uniform=8)
    torch.testing.assert_close(lc, le)
    torch.testing.assert_close(gc, ge)


def test_torch_compile_inductor_cpu_matches_eager():
    """Inductor draws random numbers with its own generator: compare without uniform draws."""
    (lc, gc), (le, ge) = _compiled_vs_eager("inductor", num_uniform=0)
    torch.testing.assert_close(lc, le)
    torch.testing.assert_close(gc, ge)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_shared_function_matches_its_float64_oracle(impl, monkeypatch):
    """The S part runs through ops (kernels under TRITON_SOFTMAX_IMPL=triton)."""
    from triton_softmax.estimator import shared_logits_bwd_ref, shared_logits_fwd_ref

    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", impl)
    h, W, b, y, ret = _problem(N=5, n=30, d=6, bias=True)
    s_ids, s_logw, sh_ids, sh_logw = build_shared_candidates(
        ret, y, 30, 7, LogUniformSampler(30), torch.Generator().manual_seed(2)
    )
    h32, W32, b32 = (t.float().requires_grad_(True) for t in (h, W, b))
    loss = SharedCandidatesFunction.apply(
        h32, W32, b32, s_ids, s_logw, sh_ids, sh_logw, y, False, 0.0
    )
    ref_loss, ref_lse = shared_logits_fwd_ref(h, W, b, s_ids, s_logw, sh_ids, sh_logw, y)
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-5)
    g = torch.rand(5, dtype=torch.float64)
    dh, dW, db = torch.autograd.grad(loss, (h32, W32, b32), g.float())
    coef, ids, coef_sh, ref_dh = shared_logits_bwd_ref(
        g, h, W, b, s_ids, s_logw, sh_ids, sh_logw, y, ref_lse
    )
    torch.testing.assert_close(dh.double(), ref_dh, rtol=1e-5, atol=1e-5)
    ref_dW = torch.zeros_like(W).index_add_(
        0, ids.flatten(), (coef[..., None] * h[:, None]).reshape(-1, 6)
    )
    ref_dW.index_add_(0, sh_ids, coef_sh.T @ h)
    torch.testing.assert_close(dW.double(), ref_dW, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["full", "per_example", "shared_samples"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_z_loss_matches_float64_formula(path, eps):
    """loss_i + z * lse_i^2, gradients by autograd on the plain formula (float64)."""
    if path != "full" and eps:
        pytest.skip("label smoothing is full-path only")
    from triton_softmax import sampled_softmax_cross_entropy
    from triton_softmax.estimator import sampled_logits_fwd_ref, shared_logits_fwd_ref

    h, W, b, y, ret = _problem(N=5, n=25, d=4, bias=True)
    z = 0.01
    params = [t.clone().requires_grad_(True) for t in (h, W, b)]
    if path == "full":
        out = sampled_softmax_cross_entropy(
            *params[:2], y, params[2], method="full", label_smoothing=eps, z_loss=z, reduction="sum"
        )
        logits = params[0] @ params[1].T + params[2]
        ref = (
            F.cross_entropy(logits, y, label_smoothing=eps, reduction="sum")
            + z * torch.logsumexp(logits, 1).square().sum()
        )
    else:
        gen = torch.Generator().manual_seed(4)
        out = sampled_softmax_from_candidates(
            params[0],
            params[1],
            y,
            ret,
            params[2],
            num_uniform=6,
            scheme=path,
            z_loss=z,
            reduction="sum",
            generator=gen,
        )
        gen = torch.Generator().manual_seed(4)
        if path == "per_example":
            from triton_softmax.candidates import build_candidates

            ids, logw = build_candidates(ret, y, 25, 6, gen, logw_dtype=torch.float64)
            _, lse = sampled_logits_fwd_ref(*params[:2], params[2], ids, logw, y)
        else:
            s_ids, s_logw, sh_ids, sh_logw = build_shared_candidates(
                ret, y, 25, 6, UniformSampler(25), gen, logw_dtype=torch.float64
            )
            _, lse = shared_logits_fwd_ref(
                *params[:2], params[2], s_ids, s_logw, sh_ids, sh_logw, y
            )
        z_y = (params[0] * params[1][y]).sum(1) + params[2][y]
        ref = (lse - z_y).sum() + z * lse.square().sum()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, r in zip(torch.autograd.grad(out, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", ["full", "per_example"])
@pytest.mark.parametrize("z", [0.0, 0.02])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softcap_matches_float64_formula(path, z, eps):
    """Logits c tanh(z / c), with z-loss and (full path) label smoothing; autograd reference."""
    if path != "full" and eps:
        pytest.skip("label smoothing is full-path only")
    from triton_softmax import sampled_softmax_cross_entropy
    from triton_softmax.candidates import build_candidates

    c = 2.0
    h, W, b, y, ret = _problem(N=6, n=25, d=4, bias=True)
    h = h * 3  # logits well into the capped range
    params = [t.clone().requires_grad_(True) for t in (h, W, b)]
    if path == "full":
        out = sampled_softmax_cross_entropy(
            *params[:2],
            y,
            params[2],
            method="full",
            label_smoothing=eps,
            z_loss=z,
            softcap=c,
            reduction="sum",
        )
        capped = c * torch.tanh((params[0] @ params[1].T + params[2]) / c)
        lse = torch.logsumexp(capped, 1)
        ref = F.cross_entropy(capped, y, label_smoothing=eps, reduction="sum")
    else:
        out = sampled_softmax_from_candidates(
            params[0],
            params[1],
            y,
            ret,
            params[2],
            num_uniform=6,
            z_loss=z,
            softcap=c,
            reduction="sum",
            generator=torch.Generator().manual_seed(4),
        )
        gen = torch.Generator().manual_seed(4)
        ids, logw = build_candidates(ret, y, 25, 6, gen, logw_dtype=torch.float64)
        zc = c * torch.tanh(
            (torch.einsum("nd,nmd->nm", params[0], params[1][ids]) + params[2][ids]) / c
        )
        z_y = c * torch.tanh(((params[0] * params[1][y]).sum(1) + params[2][y]) / c)
        lse = torch.logsumexp(zc + logw.double(), 1)
        ref = (lse - z_y).sum()
    ref = ref + z * lse.square().sum()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, r in zip(torch.autograd.grad(out, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)


def test_softcap_validation():
    h, W, b, y, ret = _problem()
    with pytest.raises(ValueError, match="softcap"):
        sampled_softmax_from_candidates(h, W, y, ret, softcap=1.0, scheme="shared_samples")
    with pytest.raises(ValueError, match="softcap"):
        SampledSoftmaxLoss(10, 4, softcap=-1.0)


@pytest.mark.parametrize("bias", [False, True])
def test_bucket_tiles_equal_the_per_example_estimator_on_the_bucket_union(bias):
    """The tiled computation = the plain estimator on S_i = union of the query's buckets
    (target once, weight 1) + the same shared T with weight n/|T|, hits removed (float64)."""
    from triton_softmax.bucket_tiles import bucket_tile_loss
    from triton_softmax.estimator import sampled_softmax_loss_ref
    from triton_softmax.lsh import LSHIndex

    g = torch.Generator().manual_seed(0)
    N, n, d, T = 9, 120, 6, 11
    h = torch.randn(N, d, generator=g, dtype=torch.float64)
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
    y = torch.randint(0, n, (N,), generator=g)
    index = LSHIndex(d, 3, 4, seed=1).build(W, b)
    params = [t.clone().requires_grad_(True) for t in (h, W) + ((b,) if bias else ())]
    out = bucket_tile_loss(
        params[0],
        params[1],
        params[2] if bias else None,
        y,
        index,
        T,
        torch.Generator().manual_seed(5),
    )
    # brute force: explicit candidate lists
    q = index.query_codes(h)
    k = index.codes
    t = torch.randint(0, n, (T,), generator=torch.Generator().manual_seed(5))
    ids, logw = [], []
    for i in range(N):
        S = [j for j in range(n) if bool((k[j] == q[i]).any()) and j != int(y[i])]
        row = S + [int(y[i])] + t.tolist()
        lw = [0.0] * (len(S) + 1) + [
            float("-inf") if (bool((k[tt] == q[i]).any()) or tt == int(y[i])) else math.log(n / T)
            for tt in t.tolist()
        ]
        ids.append(row)
        logw.append(lw)
    M = max(len(r) for r in ids)
    ids_t = torch.tensor([r + [0] * (M - len(r)) for r in ids])
    logw_t = torch.tensor([r + [float("-inf")] * (M - len(r)) for r in logw], dtype=torch.float64)
    ref = sampled_softmax_loss_ref(
        params[0], params[1], params[2] if bias else None, ids_t, logw_t, y
    )
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, r in zip(torch.autograd.grad(out.sum(), params), torch.autograd.grad(ref.sum(), params)):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sparse", [True, False])  # gathered union / dense bucket tiles
def test_bucket_shared_module_trains_and_validates(sparse):
    torch.manual_seed(0)
    n, d = 500, 16
    layer = SampledSoftmaxLoss(
        n,
        d,
        method="lsh",
        num_candidates=16,
        num_uniform=32,
        lsh_bits=10,
        lsh_tables=4,
        candidate_scheme="bucket_shared",
        sparse_grad=sparse,
        refresh_every=10,
    )
    assert layer._use_bucket_tiles(torch.zeros(1, d)) == (not sparse)
    assert layer.choice(64).method == "lsh"
    acc = _teacher_accuracy(layer)
    assert acc > 0.9, acc
    with pytest.raises(ValueError, match="bucket_shared"):
        SampledSoftmaxLoss(n, d, method="faiss", candidate_scheme="bucket_shared")
    with pytest.raises(ValueError, match="bucket_shared"):
        SampledSoftmaxLoss(n, d, method="lsh", candidate_scheme="bucket_shared", softcap=2.0)


def test_bucket_shared_module_equals_the_tiled_reference():
    """The module scores the bucket union with the shared-T Function; the tiles of
    bucket_tile_loss compute the same estimator."""
    from triton_softmax.bucket_tiles import bucket_tile_loss

    torch.manual_seed(0)
    layer = SampledSoftmaxLoss(
        300,
        8,
        method="lsh",
        num_candidates=8,
        num_uniform=16,
        lsh_bits=4,
        lsh_tables=3,
        candidate_scheme="bucket_shared",
        sparse_grad=True,
    )
    h, y = torch.randn(20, 8), torch.randint(0, 300, (20,))
    with torch.no_grad():
        got = layer(h, y)
        ref = bucket_tile_loss(
            h, layer.weight, None, y, layer.index, 16, layer._generator(h.device)
        ).mean()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


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


@pytest.mark.parametrize("impl_env", ["torch", "triton"])
@pytest.mark.parametrize("bias", [False, True])
def test_bucket_tiles_module_equals_gather(impl_env, bias, monkeypatch):
    """bucket_impl='tiles' (twins, or the Triton kernels under the interpreter) gives the loss
    and gradients of bucket_impl='gather' on the same bucket union and shared T, with ignored
    rows and a z-loss."""
    monkeypatch.setenv("TRITON_SOFTMAX_IMPL", impl_env)
    torch.manual_seed(0)
    n, d, N = 300, 12, 40
    kw = dict(
        method="lsh",
        num_uniform=16,
        lsh_bits=3,
        lsh_tables=3,
        bias=bias,
        candidate_scheme="bucket_shared",
        z_loss=1e-3,
        refresh_every=10,
    )
    gather = SampledSoftmaxLoss(n, d, bucket_impl="gather", **kw)
    tiles = SampledSoftmaxLoss(n, d, bucket_impl="tiles", **kw)
    tiles.load_state_dict(gather.state_dict())
    if bias:
        with torch.no_grad():
            gather.bias.normal_()
            tiles.bias.copy_(gather.bias)
    h = torch.randn(N, d)
    y = torch.randint(0, n, (N,))
    y[::7] = -100
    for red in ("mean", "sum"):
        gather.reduction = tiles.reduction = red
        hg, ht = h.clone().requires_grad_(True), h.clone().requires_grad_(True)
        lg, lt = gather(hg, y), tiles(ht, y)
        lg.backward()
        lt.backward()
        torch.testing.assert_close(lt, lg, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ht.grad, hg.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(tiles.weight.grad, gather.weight.grad, rtol=1e-4, atol=1e-5)
        if bias:
            torch.testing.assert_close(tiles.bias.grad, gather.bias.grad, rtol=1e-4, atol=1e-5)
        gather.zero_grad()
        tiles.zero_grad()


def test_bucket_impl_validation():
    with pytest.raises(ValueError, match="bucket_impl"):
        SampledSoftmaxLoss(
            100, 8, method="lsh", candidate_scheme="bucket_shared", bucket_impl="dense"
        )
    with pytest.raises(ValueError, match="sparse_grad"):
        SampledSoftmaxLoss(
            100,
            8,
            method="lsh",
            candidate_scheme="bucket_shared",
            bucket_impl="tiles",
            sparse_grad=True,
        )
    layer = SampledSoftmaxLoss(100, 8, method="lsh", candidate_scheme="bucket_shared")
    assert layer._use_bucket_tiles(torch.zeros(2, 8))  # auto: tiles for dense gradients
    layer = SampledSoftmaxLoss(
        100, 8, method="lsh", candidate_scheme="bucket_shared", sparse_grad=True
    )
    assert not layer._use_bucket_tiles(torch.zeros(2, 8))  # sparse: only the gather has it
