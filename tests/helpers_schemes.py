"""Shared test helpers for the scheme, sampler, drift and autograd tests."""

import torch

from triton_softmax import SampledSoftmaxLoss

SCHEMES = ["per_example", "shared_samples", "batch_union"]


def _problem(N=6, n=40, d=5, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, d, generator=g, dtype=torch.float64)
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64) if bias else None
    y = torch.randint(0, n, (N,), generator=g)
    ret = torch.randint(-1, n, (N, 7), generator=g)
    return h, W, b, y, ret


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


def train_losses(layer, batches, lr: float = 0.05) -> list[float]:
    """SGD steps on (hidden, target) batches; the loss of each step (resume tests compare)."""
    opt = torch.optim.SGD(layer.parameters(), lr=lr)
    losses = []
    for h, y in batches:
        opt.zero_grad()
        loss = layer(h, y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
