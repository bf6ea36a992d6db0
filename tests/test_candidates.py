import pytest
import torch

from triton_softmax.candidates import build_candidates, first_occurrences, sample_complement


def test_dedupe_keeps_first_occurrence():
    ids = torch.tensor([[3, 1, 3, 2, 1, 5]])
    valid = torch.tensor([[True, True, True, True, True, False]])
    out = first_occurrences(ids, valid)
    assert out.tolist() == [[True, True, False, True, False, False]]


@pytest.mark.parametrize("n,R,T", [(50, 7, 9), (13, 12, 5), (1000, 40, 64)])
def test_build_candidates_invariants(n, R, T):
    g = torch.Generator().manual_seed(1)
    N = 31
    retrieved = torch.randint(-1, n, (N, R), generator=g)  # -1 = empty, duplicates likely
    target = torch.randint(0, n, (N,), generator=g)
    retrieved[0] = target[0]  # target retrieved: must not appear twice
    ids, logw = build_candidates(retrieved, target, n, T, torch.Generator().manual_seed(2))
    assert ids.shape == (N, R + 1 + T) and logw.shape == (N, R + 1 + T)
    assert ids.dtype == torch.int64 and logw.dtype == torch.float32
    assert ((ids >= 0) & (ids < n)).all()
    for i in range(N):
        s_valid = torch.isfinite(logw[i, : R + 1])
        s = ids[i, : R + 1][s_valid].tolist()
        assert len(s) == len(set(s)), "S must be duplicate-free"
        assert s.count(int(target[i])) == 1 and ids[i, R] == target[i]
        assert (logw[i, : R + 1][s_valid] == 0).all()
        expect_s = {int(x) for x in retrieved[i] if x >= 0} | {int(target[i])}
        assert set(s) == expect_s
        t = ids[i, R + 1 :]
        comp = n - len(s)
        if comp > 0:
            assert not (set(t.tolist()) & set(s)), "T must avoid S"
            torch.testing.assert_close(
                logw[i, R + 1 :], torch.full((T,), float(torch.log(torch.tensor(comp / T))))
            )
        else:
            assert torch.isinf(logw[i, R + 1 :]).all()


def test_uniform_samples_cover_complement_uniformly():
    n, T = 20, 200_000
    members = torch.tensor([[0, 3, 4, 5, 19]])
    valid = torch.ones_like(members, dtype=torch.bool)
    samples, comp = sample_complement(members, valid, n, T, torch.Generator().manual_seed(0))
    assert int(comp) == 15
    counts = torch.bincount(samples[0], minlength=n).float()
    assert (counts[members[0]] == 0).all()
    rest = counts[counts > 0]
    assert rest.numel() == 15
    expected = T / 15
    chi2 = float(((rest - expected) ** 2 / expected).sum())
    assert chi2 < 45.0  # chi-square with 14 dof: p ~ 5e-5 at 45


def test_s_covering_all_classes_masks_t():
    n = 4
    retrieved = torch.tensor([[0, 1, 2, 3]])
    ids, logw = build_candidates(retrieved, torch.tensor([2]), n, 3)
    assert torch.isinf(logw[0, 5:]).all()
    assert torch.isfinite(logw[0, :5]).sum() == 4


@pytest.mark.parametrize(
    "N,R,M,n", [(64, 65, 512, 3000), (7, 5, 40, 30), (3, 9, 8, 10), (2, 3, 0, 10)]
)
def test_shared_hits_agree_with_the_per_row_search(N, R, M, n):
    """shared_samples' hit test (each S member searched in the sorted shared T) against the
    per-row form it replaced (every shared id searched in each row's sorted S): repeated
    shared ids, invalid S slots, tiny n (many hits) and an empty T."""
    from triton_softmax.candidates import _in_rows, _shared_hits

    g = torch.Generator().manual_seed(N + R + M)
    members = torch.randint(n, (N, R), generator=g)
    valid = torch.rand(N, R, generator=g) > 0.2
    shared = torch.randint(n, (M,), generator=g)
    got = _shared_hits(members, valid, shared)
    assert got.shape == (N, M) and got.dtype == torch.bool
    assert torch.equal(got, _in_rows(members, valid, shared.expand(N, -1)))
    if M and n <= 30:
        assert got.any()  # the small cases do test hits
