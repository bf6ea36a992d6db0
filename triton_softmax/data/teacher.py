"""A synthetic teacher task for large class counts (10^5 to 10^7), with a known Bayes accuracy.

Generative model (seeded, so every method sees the same data):

    mu_j = r_j u_j          u_j uniform on the unit sphere in R^dim, r_j = scale * exp(s g_j)
                            (g_j standard normal: class vectors of unequal norms)
    y    ~ uniform over the n classes (each class gets exactly examples_per_class examples)
    x    = mu_y + sigma e   e standard normal in R^dim

Under this model the Bayes posterior is a softmax over linear logits (the teacher):

    log p(y = j | x) = x . mu_j / sigma^2 - |mu_j|^2 / (2 sigma^2) + const

so the Bayes-optimal classifier is the teacher's own argmax, and its accuracy on fresh draws
is the Bayes accuracy. It is *estimated* here by evaluating that argmax on the held-out noisy
inputs (Monte Carlo over `heldout` draws; the binomial standard error is reported with it),
not computed in closed form. The same is done on the training inputs.

Unequal norms matter: a large-norm class has large logits where its inputs fall and a large
negative bias elsewhere, which is what makes a retrieval-based sampled softmax work harder
than for classes of one norm. The student has no bias term; it can fold one into a constant
coordinate of its hidden vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class TeacherTask:
    name: str
    num_classes: int
    dim: int
    sigma: float
    means: torch.Tensor  # (n, dim) float32
    train_x: torch.Tensor  # (N, dim) float32
    train_labels: torch.Tensor  # (N,) int64
    heldout_x: torch.Tensor  # (M, dim)
    heldout_labels: torch.Tensor  # (M,)
    bayes_accuracy: float  # teacher argmax accuracy on heldout_x (Monte Carlo estimate)
    bayes_accuracy_se: float  # its binomial standard error
    bayes_train_accuracy: float  # teacher argmax accuracy on train_x
    info: dict = field(default_factory=dict)

    @property
    def train_label_sets(self) -> torch.Tensor:
        return self.train_labels.unsqueeze(1)

    @property
    def heldout_label_sets(self) -> torch.Tensor:
        return self.heldout_labels.unsqueeze(1)

    def teacher_logits(self, x: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Bayes log-posteriors (up to a constant) of classes [lo, hi): (N, hi - lo)."""
        mu = self.means[lo:hi]
        s2 = self.sigma**2
        return (x @ mu.T) / s2 - mu.pow(2).sum(1) / (2 * s2)

    @torch.no_grad()
    def teacher_argmax(
        self, x: torch.Tensor, batch: int = 1024, chunk: int = 1 << 16
    ) -> torch.Tensor:
        """(N,) int64 Bayes-optimal predictions, in row batches and class chunks."""
        out = torch.empty(x.shape[0], dtype=torch.int64)
        for a in range(0, x.shape[0], batch):
            xb = x[a : a + batch]
            best = torch.full((xb.shape[0],), float("-inf"))
            arg = torch.zeros(xb.shape[0], dtype=torch.int64)
            for lo in range(0, self.num_classes, chunk):
                v, i = self.teacher_logits(xb, lo, lo + chunk).max(1)
                better = v > best
                best = torch.where(better, v, best)
                arg = torch.where(better, i + lo, arg)
            out[a : a + batch] = arg
        return out


def make_teacher_task(
    num_classes: int = 100_000,
    dim: int = 64,
    examples_per_class: int = 4,
    heldout: int = 20_000,
    sigma: float = 0.15,
    norm_spread: float = 0.5,
    scale: float = 1.0,
    seed: int = 0,
    bayes_examples: int | None = 20_000,
) -> TeacherTask:
    """Draw the teacher and its data (see the module docstring).

    num_classes n (10^5 ... 10^7 is the intended range; memory is n * dim * 4 bytes for the
    means plus N * dim * 4 for the inputs, N = n * examples_per_class); norm_spread s is the
    standard deviation of log r_j. bayes_examples: how many training inputs the training-set
    Bayes accuracy is measured on (None: all).
    """
    if num_classes < 2 or dim < 1 or examples_per_class < 1 or heldout < 1 or sigma <= 0:
        raise ValueError(
            "need num_classes >= 2, dim >= 1, examples_per_class >= 1, heldout >= 1 and sigma > 0"
        )
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(num_classes, dim, generator=gen)
    u = u / u.norm(dim=1, keepdim=True)
    r = scale * torch.exp(norm_spread * torch.randn(num_classes, 1, generator=gen))
    means = (u * r).float()
    labels = torch.arange(num_classes).repeat(examples_per_class)
    labels = labels[torch.randperm(labels.numel(), generator=gen)]
    train_x = means[labels] + sigma * torch.randn(labels.numel(), dim, generator=gen)
    held_labels = torch.randint(num_classes, (heldout,), generator=gen)
    held_x = means[held_labels] + sigma * torch.randn(heldout, dim, generator=gen)
    task = TeacherTask(
        name="teacher",
        num_classes=num_classes,
        dim=dim,
        sigma=sigma,
        means=means,
        train_x=train_x,
        train_labels=labels,
        heldout_x=held_x,
        heldout_labels=held_labels,
        bayes_accuracy=float("nan"),
        bayes_accuracy_se=float("nan"),
        bayes_train_accuracy=float("nan"),
    )
    acc = (task.teacher_argmax(held_x) == held_labels).float().mean().item()
    task.bayes_accuracy = acc
    task.bayes_accuracy_se = math.sqrt(max(acc * (1 - acc), 1e-12) / heldout)
    m = labels.numel() if bayes_examples is None else min(bayes_examples, labels.numel())
    task.bayes_train_accuracy = (
        (task.teacher_argmax(train_x[:m]) == labels[:m]).float().mean().item()
    )
    task.info = dict(
        examples_per_class=examples_per_class,
        norm_spread=norm_spread,
        scale=scale,
        seed=seed,
        bayes_method="Monte Carlo: teacher argmax on held-out draws",
        bayes_heldout_examples=heldout,
        bayes_train_examples=m,
        norm_quantiles=[
            float(q) for q in torch.quantile(r.squeeze(1)[:100_000], torch.tensor([0.1, 0.5, 0.9]))
        ],
    )
    return task
