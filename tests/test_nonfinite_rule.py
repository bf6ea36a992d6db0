"""The non-finite rule on every path and scheme: one NaN, +inf or -inf in hidden, weight or
bias; a row's loss is NaN exactly where F.cross_entropy's (float64, all n classes) is, and a
row's gradient w.r.t. hidden is NaN exactly where torch's is. The weight and bias gradients
of a sampled path cover only the candidates, so they may be zero where torch's are NaN, but
never NaN where torch's are not (README, "NaN and inf")."""

import pytest
import torch
import torch.nn.functional as F

from triton_softmax import SampledSoftmaxLoss

N_CLASSES, DIM, BATCH = 40, 6, 5
PATHS = (
    [dict(method="full"), dict(method="uniform")]
    + [
        dict(method="faiss", candidate_scheme=s)
        for s in ("per_example", "shared_samples", "batch_union")
    ]
    + [
        dict(method="lsh", lsh_generator=g, candidate_scheme=s)
        for g in ("clusters", "tables")
        for s in ("per_example", "shared_samples", "batch_union")
    ]
    + [
        dict(method="lsh", candidate_scheme="bucket_shared", bucket_impl=impl)
        for impl in ("tiles", "gather")
    ]
)
# (tensor, position, value): one bad entry each; the row / class / column are arbitrary
POISON = [
    (where, value)
    for where in ("hidden", "weight", "bias", "bias_target")
    for value in (float("nan"), float("inf"), float("-inf"))
]


def _name(kw):
    return "-".join(str(v) for v in kw.values())


def _inputs(where: str, value: float):
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(BATCH, DIM, generator=gen)
    W = torch.randn(N_CLASSES, DIM, generator=gen)
    b = torch.randn(N_CLASSES, generator=gen)
    y = torch.randint(0, N_CLASSES, (BATCH,), generator=gen)
    y[0] = 7  # the class poisoned by "bias_target"
    if where == "hidden":
        h[2, 3] = value
    elif where == "weight":
        W[13, 1] = value
    elif where == "bias":
        b[13] = value
    else:
        b[7] = value
    return h, W, b, y


def _torch_oracle(h, W, b, y):
    h64 = h.double().requires_grad_()
    W64 = W.double().requires_grad_()
    b64 = b.double().requires_grad_()
    loss = F.cross_entropy(h64 @ W64.T + b64, y, reduction="none")
    loss.sum().backward()
    return loss.detach(), h64.grad, W64.grad, b64.grad


@pytest.mark.parametrize("where,value", POISON, ids=lambda v: str(v))
@pytest.mark.parametrize("kw", PATHS, ids=_name)
def test_nan_exactly_where_torch_gives_nan(kw, where, value):
    h, W, b, y = _inputs(where, value)
    ref_loss, ref_dh, ref_dW, ref_db = _torch_oracle(h, W, b, y)
    layer = SampledSoftmaxLoss(
        N_CLASSES, DIM, bias=True, num_candidates=6, num_uniform=4, reduction="none", seed=2, **kw
    )
    with torch.no_grad():
        layer.weight.copy_(W)
        layer.bias.copy_(b)
    hidden = h.clone().requires_grad_()
    loss = layer(hidden, y)
    loss.sum().backward()
    assert torch.equal(torch.isnan(loss), torch.isnan(ref_loss)), (loss, ref_loss)
    # rows torch gives +-inf get +-inf or NaN: never a finite loss
    assert torch.equal(torch.isfinite(loss), torch.isfinite(ref_loss)), (loss, ref_loss)
    got_rows = torch.isnan(hidden.grad).any(1)
    ref_rows = torch.isnan(ref_dh).any(1)
    assert torch.equal(got_rows, ref_rows), (hidden.grad, ref_dh)
    for got, ref in ((layer.weight.grad, ref_dW), (layer.bias.grad, ref_db)):
        got = got.to_dense() if got.is_sparse else got
        assert not bool((torch.isnan(got) & ~torch.isnan(ref)).any())


def test_inf_bias_in_s_under_the_shared_scheme_is_nan_as_torch():
    """Before 2026-12-07: a +inf bias on a retrieved class gave loss [inf, inf, nan] under
    candidate_scheme="shared_samples", and finite gradients where torch's are NaN."""
    h, W, b, y = _inputs("bias", float("inf"))
    ref_loss, ref_dh, _, _ = _torch_oracle(h, W, b, y)
    assert ref_loss.isnan().all()
    for scheme in ("shared_samples", "batch_union", "per_example"):
        layer = SampledSoftmaxLoss(
            N_CLASSES, DIM, bias=True, method="lsh", candidate_scheme=scheme,
            num_candidates=6, num_uniform=4, reduction="none", seed=2,
        )  # fmt: skip
        with torch.no_grad():
            layer.weight.copy_(W)
            layer.bias.copy_(b)
        hidden = h.clone().requires_grad_()
        loss = layer(hidden, y)
        loss.sum().backward()
        assert loss.isnan().all() and hidden.grad.isnan().any(1).all(), scheme


def test_uniform_method_sees_a_nan_weight_row():
    """Before 2026-12-07: method="uniform" gave finite losses with a NaN weight row, where
    torch, full and lsh give NaN in every row (module and functional API)."""
    from triton_softmax import sampled_softmax_cross_entropy

    h, W, b, y = _inputs("weight", float("nan"))
    assert _torch_oracle(h, W, b, y)[0].isnan().all()
    layer = SampledSoftmaxLoss(
        N_CLASSES, DIM, bias=True, method="uniform", num_uniform=4, reduction="none"
    )
    with torch.no_grad():
        layer.weight.copy_(W)
        layer.bias.copy_(b)
    assert layer(h, y).isnan().all()
    loss = sampled_softmax_cross_entropy(
        h, W, y, b, method="uniform", num_candidates=6, num_uniform=4, reduction="none"
    )
    assert loss.isnan().all()
