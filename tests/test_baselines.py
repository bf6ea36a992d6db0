"""bench/baselines.py (the hand-written shared-negative sampled softmax) and its sweep rows."""

import types

import torch

from bench import harness, sweep
from bench.baselines import SharedNegativeSoftmax, shared_negative_loss


def test_shared_negative_loss_is_its_formula():
    g = torch.Generator().manual_seed(0)
    n, d, N, K = 50, 6, 7, 9
    W = torch.randn(n, d, generator=g, requires_grad=True)
    h = torch.randn(N, d, generator=g)
    y = torch.randint(0, n, (N,), generator=g)
    y[0] = 3
    loss = shared_negative_loss(h, W, y, K, torch.Generator().manual_seed(1))
    neg = torch.randint(n, (K,), generator=torch.Generator().manual_seed(1))
    z = torch.cat([(h * W[y]).sum(1, keepdim=True), h @ W[neg].T], 1)
    z[:, 1:] = z[:, 1:].masked_fill(neg.unsqueeze(0) == y.unsqueeze(1), float("-inf"))
    want = (torch.logsumexp(z, 1) - z[:, 0]).mean()
    torch.testing.assert_close(loss, want)
    loss.backward()
    assert W.grad.is_sparse  # F.embedding(sparse=True): only the N + K gathered rows
    touched = set(W.grad.coalesce().indices()[0].tolist())
    assert touched <= set(y.tolist()) | set(neg.tolist())


def test_module_trains_with_sgd():
    torch.manual_seed(0)
    m = SharedNegativeSoftmax(200, 8, 16)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    h, y = torch.randn(32, 8), torch.randint(0, 200, (32,))
    first = float(m(h, y))
    for _ in range(30):
        opt.zero_grad()
        m(h, y).backward()
        opt.step()
    assert float(m(h, y)) < first


def test_sweep_rows_run_and_match():
    problem = harness.Problem(3000, 8, 16, torch.float32, "cpu", seed=0, need_topk=False)
    runner, _, _ = harness.make_runner("shared_neg1024", problem)
    assert runner.num_negatives == 1024
    assert torch.isfinite(runner.step())
    args = types.SimpleNamespace(lr=0.1, seed=0)
    K = sweep.match_negatives(problem, target_ms=1e9, args=args)  # never reached: n - 1
    assert K == problem.n - 1
    K = sweep.match_negatives(problem, target_ms=0.0, args=args)  # at once: the first K
    assert K == 1024
