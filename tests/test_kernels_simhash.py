"""kernels/simhash.py against a float64 projection and against lsh.simhash_codes_ref.

A sign bit is only defined up to rounding where the projection is ~0, so bits are compared
where the float64 projection clears a margin of 1e-4 |x_aug| |plane| (fp32 accumulation of the
same input values errs by ~1e-6 of that); inside the margin either bit is accepted.
"""

import pytest
import torch

from triton_softmax.kernels.simhash import simhash_codes
from triton_softmax.lsh import make_hyperplanes, max_row_norm, simhash_codes_ref

pytestmark = pytest.mark.usefixtures("poison_kernel_outputs")


def _augmented(x, bias, max_norm):
    """[x | bias coordinate | MIPS coordinate] in float64, the twin's docstring made explicit."""
    x = x.double()
    M = x.shape[0]
    if isinstance(bias, torch.Tensor):
        b = bias.double()
    else:
        b = torch.full((M,), float(bias or 0.0), dtype=torch.float64)
    if max_norm is None:
        extra = torch.zeros(M, dtype=torch.float64)
    else:
        sq = x.pow(2).sum(1) + (b.pow(2) if isinstance(bias, torch.Tensor) else 0)
        extra = (float(max_norm) ** 2 - sq).clamp_min(0).sqrt()
    return torch.cat([x, b[:, None], extra[:, None]], 1)


def _check_bits(codes, x_aug, planes, K):
    proj = torch.einsum("md,lkd->mlk", x_aug, planes.double())
    margin = 1e-4 * x_aug.norm(dim=1)[:, None, None] * planes.double().norm(dim=2)[None]
    want = proj > 0
    got = ((codes.long()[:, :, None] >> torch.arange(K)) & 1).bool()
    clear = proj.abs() > margin
    assert torch.equal(got[clear], want[clear])
    assert (codes >= 0).all() and (codes < (1 << K)).all()
    return clear


SIZES = [  # M, d, K, L: N = 1, d not a power of two, L not a multiple of the table block
    (1, 16, 1, 1),
    (37, 13, 7, 3),
    (70, 40, 20, 9),
]
MODES = ["key_bias", "key", "query_bias", "query"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", MODES)
def test_simhash_matches_float64_projection_and_twin(dtype, size, mode):
    M, d, K, L = size
    g = torch.Generator().manual_seed(M * 131 + d + K)
    x = (torch.randn(M, d, generator=g) * torch.rand(M, 1, generator=g) * 2).to(dtype)
    planes = make_hyperplanes(d, K, L, seed=M + L)
    if mode == "key_bias":
        bias = torch.randn(M, generator=g).to(dtype)
        max_norm = max_row_norm(x, bias) * 1.1  # M >= every norm; 1.1 keeps the sqrt tame
    elif mode == "key":
        bias, max_norm = None, float(max_row_norm(x, None)) * 1.1
    elif mode == "query_bias":
        bias, max_norm = 1.0, None
    else:
        bias, max_norm = None, None
    codes = simhash_codes(x, planes, bias, max_norm)
    assert codes.shape == (M, L) and codes.dtype == torch.int32
    clear = _check_bits(codes, _augmented(x, bias, max_norm), planes, K)
    twin = simhash_codes_ref(x, planes, bias, max_norm)
    got = ((codes.long()[:, :, None] >> torch.arange(K)) & 1).bool()
    want = ((twin.long()[:, :, None] >> torch.arange(K)) & 1).bool()
    assert torch.equal(got[clear], want[clear])
    assert clear.float().mean() > 0.95  # the margin excuses a handful of bits, not the test


def test_simhash_strided_input_and_empty():
    g = torch.Generator().manual_seed(3)
    d, K, L = 24, 5, 4
    base = torch.randn(d, 19, generator=g)
    x = base.T  # (19, d), strides (1, 19): no contiguity assumed
    planes = make_hyperplanes(d, K, L, seed=2)
    codes = simhash_codes(x, planes, None, None)
    _check_bits(codes, _augmented(x, None, None), planes, K)
    empty = simhash_codes(x[:0], planes, None, None)
    assert empty.shape == (0, L)


def test_simhash_rejects_bad_shapes():
    planes = make_hyperplanes(8, 4, 2, seed=0)
    with pytest.raises(ValueError):
        simhash_codes(torch.randn(3, 9), planes)
    with pytest.raises(ValueError):
        simhash_codes(torch.randn(3, 8), planes, torch.randn(4), 1.0)
