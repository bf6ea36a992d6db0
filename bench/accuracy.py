"""Accuracy vs wall-clock time of real training runs, one per output-layer method.

    python -m bench.accuracy --task wordnet-synset --methods full,faiss,lsh,lsh@20,uniform \
        --epochs 3 [--max-classes 5000] [--max-examples ...] [--refresh-every 100] [--out DIR]

Model: nn.EmbeddingBag (mean) over the gloss tokens (or the raw input for --task teacher)
-> MLP to d with a linear skip path (ResidualMLP) -> the output layer, trained by each
method in turn:

  full     SampledSoftmaxLoss(method="full"): the exact softmax
  faiss    SampledSoftmaxLoss(method="faiss"): S = FAISS top-(|S|-1) + target, T uniform
  lsh      SampledSoftmaxLoss(method="lsh"): S = SimHash buckets + target, T uniform
  uniform  the same estimator with S = {target} only and |S| - 1 + |T| uniform samples (the
           same number of scored classes per example as faiss/lsh), each with weight
           (n - 1) / (|S| - 1 + |T|): sampled_softmax_from_candidates with no retrieved ids

--task pycode (triton_softmax/data/pycode.py): next-token prediction over the Python
standard library's source on this machine (about 1.2e5 Zipfian classes, 7.7M training
tokens, held-out files); the model embeds each of the --context previous tokens
(--context-embed-dim each), concatenates them and runs the same MLP. Each evaluation is on
--eval-examples held-out positions: exact NLL over all classes and its perplexity
(heldout_nll, heldout_ppl), P@1 and P@5 (p1 / p5 are the held-out ones for this task).
--eval-at 30,60,120 evaluates at the first step past each training wall-clock budget, so
runs are compared at budgets, not epochs (python3 -m bench.budget_table prints the table).

A method may carry its own refresh interval: "lsh@20" refreshes the index every 20 steps.

Same for every method: the seed (so the same initial weights), the data order (one seeded
permutation per epoch), and the optimizer, Adam: the MLP with torch.optim.Adam at --lr; the
embedding bag (sparse gradients) with SparseAdam at --table-lr; the output layer at
--table-lr, with SparseAdam when its gradient is sparse (faiss, lsh, uniform) and Adam for
full, whose gradient is dense. On a gradient that covers every row SparseAdam's update is
Adam's, so the only difference is that rows a step does not touch keep their moments
("lazy" Adam), as in any sparse trainer. Adam rather than SGD because SGD at one learning
rate for all methods fits one-example-per-class data far more slowly, and the runs must fit
a CPU time budget.

Evaluation is always the exact softmax over all classes (exact_topk), on a fixed seeded
subset of --eval-examples training examples (the synset task has one gloss per synset, so
this is accuracy on glosses the model trains on: how well it fits the dictionary) and, for
the lemma and teacher tasks, on held-out examples. P@1 / P@5: the share of examples with a
right class among the top 1 / 5 (for the lemma task a right class is any lemma of the
gloss's synset). Evaluation time is not counted in the wall time of the curve.

One JSON record per run goes to --out (bench/results/ by default): device, versions,
config, load average at start and end (the machine may be shared), per-epoch seconds, the
curve of (wall seconds, P@1, P@5[, held-out P@1]) and index refresh statistics.
`summarise()` (also used by plots/accuracy.py) adds, against the full softmax's final P@1 of
the same session, the wall time to reach 95% and 100% of it.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
import os
import platform
import sys
import time

import torch
from torch import nn

import triton_softmax
from bench import harness
from bench.baselines import shared_negative_loss
from bench.harness import cpu_model
from triton_softmax import SampledSoftmaxLoss, dispatch, exact_topk, sampled_softmax_from_candidates
from triton_softmax.checks import FAISS_INDEX_KINDS

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TASKS = ("wordnet-synset", "wordnet-lemma", "teacher", "pycode")
METHODS = ("full", "faiss", "lsh", "uniform", "shared_neg", "auto")
# --rerank-copy: the rerank_copy it sets on the lsh runs (auto: the library's default)
RERANK_COPY = {"auto": None, "true": True, "false": False}


# ---- data ------------------------------------------------------------------------------------
class Data:
    """The task as the training loop sees it: inputs by example index, labels, eval sets."""

    def __init__(self, task, kind: str):
        self.task, self.kind = task, kind
        self.num_classes = task.num_classes
        self.train_labels = task.train_labels
        self.train_label_sets = task.train_label_sets
        self.has_heldout = getattr(task, "heldout_label_sets", None) is not None

    @property
    def num_train(self) -> int:
        return int(self.train_labels.numel())

    def inputs(self, idx: torch.Tensor, split: str = "train"):
        if self.kind == "text":
            bags = self.task.train if split == "train" else self.task.heldout
            return bags.batch(idx)
        if self.kind == "context":
            return (self.task.contexts(idx, split),)
        x = self.task.train_x if split == "train" else self.task.heldout_x
        return (x[idx],)

    def num_heldout(self) -> int:
        if self.kind == "context":
            return self.task.num_examples("heldout")
        return int(self.task.heldout_label_sets.shape[0]) if self.has_heldout else 0


def load_data(args) -> tuple[Data, dict]:
    from triton_softmax import data as tsd

    if args.task == "wordnet-synset":
        task = tsd.synset_task(args.wordnet_dir, max_classes=args.max_classes, seed=args.seed)
        d = Data(task, "text")
    elif args.task == "wordnet-lemma":
        task = tsd.lemma_task(
            args.wordnet_dir,
            max_classes=args.max_classes,
            heldout_fraction=args.heldout_fraction,
            seed=args.seed,
        )
        d = Data(task, "text")
    elif args.task == "pycode":
        task = tsd.pycode_task(context=args.context)
        d = Data(_ContextView(task), "context")
    else:
        task = tsd.make_teacher_task(
            num_classes=args.max_classes or 100_000,
            dim=args.teacher_dim,
            examples_per_class=args.examples_per_class,
            heldout=args.eval_examples,
            sigma=args.teacher_sigma,
            seed=args.seed,
            bayes_examples=args.bayes_examples,
        )
        d = Data(task, "dense")
    if args.max_examples is not None and args.max_examples < d.num_train:
        gen = torch.Generator().manual_seed(args.seed + 1)
        keep = torch.randperm(d.num_train, generator=gen)[: args.max_examples].sort().values
        d.train_subset = keep
        if d.kind == "text":
            b = task.train
            task.train = type(b)(b.tokens, b.starts[keep], b.lengths[keep])
        elif d.kind == "context":
            raise SystemExit("--max-examples is not supported for --task pycode")
        else:
            task.train_x = task.train_x[keep]
        d.train_labels = d.train_labels[keep]
        d.train_label_sets = d.train_label_sets[keep]
    info = dict(getattr(task, "info", {}))
    info.update(
        name=task.name,
        num_classes=d.num_classes,
        train_examples=d.num_train,
        heldout_examples=d.num_heldout(),
    )
    if d.kind in ("text", "context"):
        info["vocab"] = len(task.vocab)
    else:
        info.update(
            bayes_accuracy=task.bayes_accuracy,
            bayes_accuracy_se=task.bayes_accuracy_se,
            bayes_train_accuracy=task.bayes_train_accuracy,
            teacher_dim=task.dim,
            sigma=task.sigma,
        )
    return d, info


class _ContextView:
    """PyCodeTask as Data reads a task: labels and label sets as attributes."""

    def __init__(self, task):
        self.task = task
        self.name, self.vocab, self.info = task.name, task.vocab, task.info
        self.num_classes = task.num_classes
        self.train_labels = task.labels("train")
        self.train_label_sets = self.train_labels.unsqueeze(1)
        self.heldout_label_sets = task.labels("heldout").unsqueeze(1)

    def contexts(self, idx: torch.Tensor, split: str = "train") -> torch.Tensor:
        return self.task.contexts(idx, split)

    def num_examples(self, split: str = "train") -> int:
        return self.task.num_examples(split)


# ---- model -----------------------------------------------------------------------------------
class ResidualMLP(nn.Module):
    """x -> A x + B relu(C x): an MLP with a linear skip path.

    Without the skip path a plain Linear-ReLU-Linear stalls for epochs at the uniform
    prediction on one-example-per-class data (measured on 5K and 20K synsets); with it the
    model fits the glosses as fast as a linear map and keeps the MLP's capacity.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.skip = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.mlp(x)


class Model(nn.Module):
    """Bag of tokens (or a dense input) -> MLP -> d -> output layer (SampledSoftmaxLoss)."""

    def __init__(self, data: Data, method: str, refresh_every: int, args):
        super().__init__()
        if data.kind == "text":
            self.embed = nn.EmbeddingBag(
                len(data.task.vocab), args.embed_dim, mode="mean", sparse=True
            )
            in_dim = args.embed_dim
        elif data.kind == "context":  # one embedding per position, concatenated
            self.embed = nn.Embedding(len(data.task.vocab), args.context_embed_dim, sparse=True)
            in_dim = args.context * args.context_embed_dim
        else:
            self.embed = None
            in_dim = data.task.dim
        self.mlp = ResidualMLP(in_dim, args.hidden, args.dim)
        self.method = method
        # sampled methods give a sparse output gradient only for --output-optimizer sparse-adam
        self.sparse = method != "full" and args.output_optimizer == "sparse-adam"
        self.shared_negatives = getattr(args, "shared_negatives", 1024)
        self.output = SampledSoftmaxLoss(
            data.num_classes,
            args.dim,
            method="full" if method in ("uniform", "shared_neg") else method,
            num_candidates=args.num_candidates,
            num_uniform=args.num_uniform,
            num_shared=getattr(args, "num_shared", 1024),
            refresh_every=refresh_every,
            lsh_generator=getattr(args, "lsh_generator", None),
            candidate_scheme=getattr(args, "candidate_scheme", "per_example"),
            search_min_mass=_gate_option(args) if method in ("faiss", "lsh", "auto") else None,
            rerank_copy=RERANK_COPY[getattr(args, "rerank_copy", "auto")]
            if method == "lsh"
            else None,
            faiss_index=getattr(args, "faiss_index", "auto"),
            lsh_nprobe=getattr(args, "lsh_nprobe", None),
            **_proposal_options(args),
            sparse_grad=self.sparse,
            seed=args.seed,
        )
        self.num_uniform_only = args.num_candidates - 1 + args.num_uniform
        self.neg_generator = torch.Generator().manual_seed(args.seed + 7)
        self.seed = args.seed
        self.steps = 0

    def hidden(self, *inputs) -> torch.Tensor:
        x = self.embed(*inputs) if self.embed is not None else inputs[0]
        return self.mlp(x.flatten(1))

    def loss(self, inputs, target: torch.Tensor) -> torch.Tensor:
        h = self.hidden(*inputs)
        if self.method == "shared_neg":  # the hand-written baseline (bench/baselines.py)
            return shared_negative_loss(
                h, self.output.weight, target, self.shared_negatives, self.neg_generator,
                sparse=self.sparse,
            )  # fmt: skip
        if self.method != "uniform":
            return self.output(h, target)
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.steps) % (1 << 63))
        self.steps += 1
        none = torch.empty(h.shape[0], 0, dtype=torch.int64)
        return sampled_softmax_from_candidates(
            h,
            self.output.weight,
            target,
            none,
            num_uniform=self.num_uniform_only,
            sparse_grad=self.sparse,
            generator=gen,
        )

    def optimizers(self, lr: float, table_lr: float) -> list[torch.optim.Optimizer]:
        """Adam on the MLP (lr); the embedding and output tables at table_lr (see module doc)."""
        opts = [torch.optim.Adam(self.mlp.parameters(), lr=lr)]
        if self.embed is not None:
            opts.append(torch.optim.SparseAdam(list(self.embed.parameters()), lr=table_lr))
        out = list(self.output.parameters())
        opts.append(
            torch.optim.Adam(out, lr=table_lr)
            if not self.sparse
            else torch.optim.SparseAdam(out, lr=table_lr)
        )
        return opts


def lr_schedule(opt: torch.optim.Optimizer, kind: str, total_steps: int):
    """constant, or linear decay to zero over the run's planned steps (the same for every
    method when the epochs are the same)."""
    if kind == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: max(0.0, 1.0 - step / max(total_steps, 1))
    )


def train_step(model: Model, opts: list, scheds: list, idx: torch.Tensor, data: Data) -> float:
    """One training step on examples idx (forward, backward, every optimizer and schedule,
    as run_one's loop times them phase by phase): the loss."""
    loss = model.loss(data.inputs(idx), data.train_labels[idx])
    for o in opts:
        o.zero_grad(set_to_none=True)
    loss.backward()
    for o in opts:
        o.step()
    for sc in scheds:
        sc.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate(
    model: Model,
    data: Data,
    idx: torch.Tensor,
    label_sets: torch.Tensor,
    split: str = "train",
    batch: int = 1024,
) -> tuple[float, float]:
    """Exact-softmax (P@1, P@5) over examples idx; label_sets (len(idx), m), -1 padded."""
    model.eval()
    hits1 = hits5 = 0
    W = model.output.weight
    k = min(5, data.num_classes)
    for a in range(0, idx.numel(), batch):
        b = idx[a : a + batch]
        h = model.hidden(*data.inputs(b, split))
        _, top = exact_topk(h, W, k, chunk=16384)
        labels = label_sets[a : a + batch]
        hit = (top.unsqueeze(2) == labels.unsqueeze(1)) & (labels.unsqueeze(1) >= 0)
        hit = hit.any(dim=2)  # (B, k): position j is a right class
        hits1 += int(hit[:, 0].sum())
        hits5 += int(hit.any(dim=1).sum())
    model.train()
    n = max(idx.numel(), 1)
    return hits1 / n, hits5 / n


@torch.no_grad()
def evaluate_nll(
    model: Model, data: Data, idx: torch.Tensor, split: str = "heldout", batch: int = 1024
) -> dict:
    """Exact softmax over all classes on examples idx: mean NLL (nats), perplexity exp(NLL),
    P@1 and P@5 (one pass: per chunk of classes the logits' log-sum-exp and top-5)."""
    model.eval()
    W = model.output.weight.detach()
    b = model.output.bias.detach() if model.output.bias is not None else None
    labels = data.train_labels if split == "train" else data.task.heldout_label_sets[:, 0]
    nll = 0.0
    hits1 = hits5 = 0
    for a in range(0, idx.numel(), batch):
        ib = idx[a : a + batch]
        h = model.hidden(*data.inputs(ib, split)).float()
        y = labels[ib]
        lse = torch.full((h.shape[0],), float("-inf"))
        best_s = torch.full((h.shape[0], 0), float("-inf"))
        best_i = torch.zeros((h.shape[0], 0), dtype=torch.int64)
        for lo in range(0, W.shape[0], 16384):  # one product per chunk: lse and top-5
            z = h @ W[lo : lo + 16384].float().T
            if b is not None:
                z = z + b[lo : lo + 16384].float()
            lse = torch.logaddexp(lse, torch.logsumexp(z, 1))
            s, i = torch.topk(z, min(5, z.shape[1]), 1)
            best_s, pos = torch.topk(
                torch.cat([best_s, s], 1), min(5, best_s.shape[1] + s.shape[1]), 1
            )
            best_i = torch.cat([best_i, i + lo], 1).gather(1, pos)
        z_y = (h * W[y].float()).sum(1) + (b[y].float() if b is not None else 0.0)
        nll += float((lse - z_y).sum())
        hit = best_i == y.unsqueeze(1)
        hits1 += int(hit[:, 0].sum())
        hits5 += int(hit.any(1).sum())
    model.train()
    m = max(idx.numel(), 1)
    return dict(nll=nll / m, ppl=math.exp(nll / m), p1=hits1 / m, p5=hits5 / m)


# ---- one run ---------------------------------------------------------------------------------
def _versions() -> dict:
    v = dict(
        python=platform.python_version(),
        torch=torch.__version__,
        triton_softmax=triton_softmax.__version__,
    )
    try:
        import numpy

        v["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover
        pass
    if triton_softmax.faiss_available():
        import faiss

        v["faiss"] = faiss.__version__
    return v


def _device() -> dict:
    name = cpu_model()
    return dict(
        kind="cpu",
        name=name,
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        platform=platform.platform(),
    )


def parse_method(spec: str, default_refresh: int) -> tuple[str, int]:
    name, _, r = spec.partition("@")
    if name not in METHODS:
        raise SystemExit(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return name, int(r) if r else default_refresh


def _proposal_options(args) -> dict:
    """The sampler / num_head keywords a run passes (none: the library's defaults)."""
    out = {}
    if getattr(args, "sampler", "auto") != "auto":
        out["sampler"] = args.sampler
    if getattr(args, "num_head", None) is not None:
        out["num_head"] = args.num_head
    return out


def proposal_label(sampling, args) -> str:
    """The label part naming a non-default proposal: -q<sampler> when asked, -H<head> for an
    exact head (the library's default has one: its label says H256)."""
    text = f"-q{args.sampler}" if getattr(args, "sampler", "auto") != "auto" else ""
    return text + (f"-H{sampling.num_head}" if sampling.num_head else "")


def _gate_option(args) -> float | str | None:
    """--search-min-mass as SampledSoftmaxLoss takes it: 'off' -> None, 'auto', or a float."""
    m = getattr(args, "search_min_mass", "off")
    if m is None or m == "off":
        return None
    return m if m == "auto" else float(m)


def run_one(data: Data, data_info: dict, spec: str, args, session: str) -> dict:
    from tqdm import tqdm

    method, refresh = parse_method(spec, args.refresh_every)
    share = getattr(args, "auto_target_share", None)
    torch.manual_seed(args.seed)
    model = Model(data, method, refresh, args)
    # the search gate that runs (search_min_mass as the module resolved it; None: none)
    gate = (
        model.output.index_options.search_min_mass if method in ("faiss", "lsh", "auto") else None
    )
    t_ran = model.output.sampling_options.num_uniform  # |T| as resolved ("auto" sizes it)
    opts = model.optimizers(args.lr, args.table_lr)
    total_steps = args.epochs * math.ceil(data.num_train / args.batch_size)
    scheds = [lr_schedule(o, args.lr_schedule, total_steps) for o in opts]
    N = data.num_train
    steps_per_epoch = math.ceil(N / args.batch_size)
    eval_gen = torch.Generator().manual_seed(args.seed + 2)
    eval_idx = torch.randperm(N, generator=eval_gen)[: args.eval_examples].sort().values
    eval_sets = data.train_label_sets[eval_idx]
    held_idx = held_sets = None
    if data.kind == "context":  # a seeded sample of held-out positions
        held_gen = torch.Generator().manual_seed(args.seed + 3)
        held_idx = torch.randperm(data.num_heldout(), generator=held_gen)[: args.eval_examples]
        held_idx = held_idx.sort().values
    elif data.has_heldout:
        held_idx = torch.arange(min(data.num_heldout(), args.eval_examples))
        held_sets = data.task.heldout_label_sets[held_idx]
    every = max(1, math.ceil(steps_per_epoch / args.evals_per_epoch))
    # wall-clock budgets (s) at which to evaluate as well: the first step that reaches each
    eval_at = sorted(float(x) for x in (args.eval_at or "").split(",") if x.strip())

    wall = 0.0
    train_cpu = 0.0  # process CPU seconds of the training steps (every thread of the run)
    eval_seconds = 0.0
    # where the training wall time goes; "forward" includes index search and refreshes
    phases = dict(batch=0.0, forward=0.0, backward=0.0, optimizer=0.0)
    curve: list[dict] = []

    def clock() -> float:
        """The budget clock: training wall seconds, or with --clock cpu the run's CPU
        seconds (on a machine shared by other jobs a one-thread run's CPU time is what a
        dedicated core would have taken; its wall time is not)."""
        return train_cpu if args.clock == "cpu" else wall

    def point(epoch: float, step: int, loss: float) -> None:
        nonlocal eval_seconds
        t0 = time.perf_counter()
        if data.kind == "context":  # held-out only: exact NLL, perplexity, P@1, P@5
            ev = evaluate_nll(model, data, held_idx)
            eval_seconds += time.perf_counter() - t0
            curve.append(
                dict(
                    epoch=round(epoch, 4),
                    step=step,
                    wall_s=wall,
                    train_cpu_s=train_cpu,
                    clock_s=clock(),
                    p1=ev["p1"],
                    p5=ev["p5"],
                    heldout_p1=ev["p1"],
                    heldout_p5=ev["p5"],
                    heldout_nll=ev["nll"],
                    heldout_ppl=ev["ppl"],
                    loss=loss,
                    load1=os.getloadavg()[0],
                )
            )
            if gate is not None:  # the last refresh's measurement: is the search on?
                st = model.output.stats()
                curve[-1].update(captured_mass=st["captured_mass"], search_on=st["search_on"])
            return
        p1, p5 = evaluate(model, data, eval_idx, eval_sets)
        rec = dict(
            epoch=round(epoch, 4),
            step=step,
            wall_s=wall,
            train_cpu_s=train_cpu,
            clock_s=clock(),
            p1=p1,
            p5=p5,
            loss=loss,
            load1=os.getloadavg()[0],
        )
        if gate is not None:
            st = model.output.stats()  # the last refresh's measurement: is the search on?
            rec.update(captured_mass=st["captured_mass"], search_on=st["search_on"])
        if held_idx is not None:
            rec["heldout_p1"], rec["heldout_p5"] = evaluate(
                model, data, held_idx, held_sets, "heldout"
            )
        eval_seconds += time.perf_counter() - t0
        curve.append(rec)

    load_start = os.getloadavg()
    cpu0 = time.process_time()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    point(0.0, 0, float("nan"))
    epoch_seconds: list[float] = []
    step = 0
    stopped = None
    loss_sum, loss_n = 0.0, 0
    label = f"{method}@{refresh}" if method in ("faiss", "lsh") else method
    if method == "shared_neg":
        label = f"shared_neg-K{args.shared_negatives}"
    elif getattr(args, "candidate_scheme", "per_example") != "per_example" and method != "uniform":
        label += f"-{args.candidate_scheme}"
        if t_ran != 64 and gate is None:
            label += f"-T{t_ran}"  # a shared T's size is the run's identity
        shared = getattr(args, "num_shared", 1024)
        if args.candidate_scheme in ("hybrid", "auto") and shared != 1024:
            label += f"-M{shared}"
    if gate is not None:
        label += f"-T{t_ran}-min{gate:g}"
    if method not in ("full", "shared_neg"):
        label += proposal_label(model.output.sampling_options, args)
    if getattr(args, "lsh_nprobe", None) is not None and method in ("lsh", "auto"):
        label += f"-np{args.lsh_nprobe}"
    if share is not None and method == "auto":
        label += f"-share{share:g}"
    if getattr(args, "rerank_copy", "auto") != "auto" and method == "lsh":
        label += "-copy" if args.rerank_copy == "true" else "-live"
    if getattr(args, "faiss_index", "auto") != "auto" and method == "faiss":
        label += f"-{args.faiss_index}"
    for epoch in range(args.epochs):
        order = torch.randperm(N, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        e_wall = 0.0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{label} epoch {epoch + 1}/{args.epochs}",
            disable=args.no_progress,
            leave=False,
            dynamic_ncols=True,
        )
        for s in bar:
            c0 = time.process_time()
            t0 = time.perf_counter()
            idx = order[s * args.batch_size : (s + 1) * args.batch_size]
            inputs = data.inputs(idx)
            t1 = time.perf_counter()
            loss = model.loss(inputs, data.train_labels[idx])
            t2 = time.perf_counter()
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            t3 = time.perf_counter()
            for o in opts:
                o.step()
            for sc in scheds:
                sc.step()
            lv = float(loss.detach())
            t4 = time.perf_counter()
            train_cpu += time.process_time() - c0
            dt = t4 - t0
            for key, a, b in (
                ("batch", t0, t1),
                ("forward", t1, t2),
                ("backward", t2, t3),
                ("optimizer", t3, t4),
            ):
                phases[key] += b - a
            wall += dt
            e_wall += dt
            step += 1
            loss_sum, loss_n = loss_sum + lv, loss_n + 1
            now = clock()
            due = bool(eval_at) and now >= eval_at[0]
            while eval_at and now >= eval_at[0]:
                eval_at.pop(0)
            if due or (s + 1) % every == 0 or s + 1 == steps_per_epoch:
                point(epoch + (s + 1) / steps_per_epoch, step, loss_sum / loss_n)
                loss_sum, loss_n = 0.0, 0
                bar.set_postfix(p1=f"{curve[-1]['p1']:.3f}", wall=f"{wall:.0f}s")
            if args.time_limit and now >= args.time_limit:
                stopped = "time_limit"
                break
        bar.close()
        epoch_seconds.append(e_wall)
        if stopped:
            if curve[-1]["step"] != step:
                point(epoch + (s + 1) / steps_per_epoch, step, loss_sum / max(loss_n, 1))
            break
    cpu_s = time.process_time() - cpu0
    out = model.output
    record = dict(
        kind="accuracy",
        session=session,
        task=args.task,
        method=method,
        label=label,
        refresh_every=refresh if method in ("faiss", "lsh") else None,
        started=started,
        finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=_device(),
        versions=_versions(),
        config=dict(vars(args)),
        data=data_info,
        load_avg_start=list(load_start),
        load_avg_end=list(os.getloadavg()),
        process_cpu_s=cpu_s,
        eval_seconds=eval_seconds,
        eval=dict(
            train_examples=0 if data.kind == "context" else int(eval_idx.numel()),
            heldout_examples=int(held_idx.numel()) if held_idx is not None else 0,
            points_per_epoch=args.evals_per_epoch,
            exact=True,
        ),
        epoch_seconds=epoch_seconds,
        train_wall_s=wall,
        train_cpu_s=train_cpu,
        clock=args.clock,
        phase_seconds=phases,
        steps=step,
        steps_per_epoch=steps_per_epoch,
        stopped=stopped,
        refresh=dict(count=out.refresh_count, total_seconds=out.total_refresh_seconds)
        if method in ("faiss", "lsh")
        else None,
        explain=f"shared_neg: one set of K = {args.shared_negatives} uniform negatives shared "
        "by the batch, cross-entropy over target + K (bench/baselines.py)"
        if method == "shared_neg"
        else out.explain(batch=args.batch_size)
        if method != "uniform"
        else f"uniform: S = target only, |T| = {model.num_uniform_only} uniform, weight (n-1)/|T|",
        final=dict(curve[-1]),
        curve=curve,
    )
    return record


# ---- summary ---------------------------------------------------------------------------------
def _first_reach(curve: list[dict], level: float, key: str = "wall_s") -> float | None:
    for p in curve:
        if p["p1"] >= level:
            return p[key]
    return None


def p1_at(curve: list[dict], budget: float) -> float:
    """P@1 of a run at a wall-clock budget: its last evaluation at or before it (0 before the
    first; a run that ended keeps its final value)."""
    best = 0.0
    for p in curve:
        if p["wall_s"] > budget:
            break
        best = p["p1"]
    return best


def budget_gaps(run: dict, other: dict) -> list[dict]:
    """Budgets where `run` is below `other` on the time-to-accuracy plot: at every evaluation
    time of either run (where one of the step functions changes), P@1 of each; returns the
    budgets with run < other (empty: run is at or above other at every budget)."""
    times = sorted({p["wall_s"] for p in run["curve"]} | {p["wall_s"] for p in other["curve"]})
    gaps = []
    for t in times:
        a, b = p1_at(run["curve"], t), p1_at(other["curve"], t)
        if a < b:
            gaps.append(dict(wall_s=t, p1=a, other_p1=b))
    return gaps


def _epochs_done(r: dict) -> float:
    """Epochs trained: fractional for a run cut short by --time-limit."""
    if r.get("steps") and r.get("steps_per_epoch"):
        return r["steps"] / r["steps_per_epoch"]
    return float(len(r["epoch_seconds"]))


def is_full_reference(r: dict) -> bool:
    """A full-softmax run that ran its whole schedule: the reference of its session. A run
    cut short by --time-limit is not (its final P@1 is not the exact softmax's)."""
    return r["method"] == "full" and not r.get("stopped")


def summarise(records: list[dict]) -> list[dict]:
    """One row per run, with times to 95% / 100% of the same session's full final P@1.

    Times are those of the first evaluation point at or above the level (so they are upper
    bounds, by at most one evaluation interval). ratio = that time / full's total wall time.
    e95 / e100: the same points in epochs, which a shared machine's load does not distort.
    Without a reference full run (is_full_reference) a session's rows get no relative figures.
    """
    rows = []
    full = {}
    for r in records:
        if is_full_reference(r):
            full[(r["session"], r["task"])] = r
    for r in records:
        f = full.get((r["session"], r["task"]))
        row = dict(
            session=r["session"],
            task=r["task"],
            label=r["label"],
            method=r["method"],
            refresh_every=r["refresh_every"],
            epochs=_epochs_done(r),
            final_p1=r["final"]["p1"],
            final_p5=r["final"]["p5"],
            heldout_p1=r["final"].get("heldout_p1"),
            best_p1=max(p["p1"] for p in r["curve"]),
            sec_per_epoch=r["train_wall_s"] / max(_epochs_done(r), 1e-12),
            train_wall_s=r["train_wall_s"],
            load_start=r["load_avg_start"][0],
            load_end=r["load_avg_end"][0],
            refresh_s=(r["refresh"] or {}).get("total_seconds"),
            stopped=r.get("stopped"),
            steps=r.get("steps"),
        )
        if f is not None:
            ref = f["final"]["p1"]
            row["full_final_p1"] = ref
            row["rel_p1"] = row["final_p1"] / ref if ref > 0 else None
            for key, level in (("t95_s", 0.95 * ref), ("t100_s", ref)):
                t = _first_reach(r["curve"], level) if ref > 0 else None
                row[key] = t
                row[key.replace("_s", "_ratio")] = t / f["train_wall_s"] if t is not None else None
                e = _first_reach(r["curve"], level, "epoch") if ref > 0 else None
                row[key.replace("t", "e", 1).replace("_s", "")] = e
        rows.append(row)
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(rows, key=lambda x: (x["session"], order.get(x["method"], 9), x["label"]))


def format_table(rows: list[dict]) -> str:
    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    head = (
        "| run | epochs | s/epoch | final P@1 | P@5 | held-out P@1 | vs full | "
        "t95 (s) | t95/full | e95 | t100 (s) | t100/full | e100 | refresh s | "
        "load 1m start/end |"
    )
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        lines.append(
            f"| {r['label']}{' (stopped: ' + r['stopped'] + ')' if r.get('stopped') else ''} | "
            f"{f(r['epochs'], '.3g')} | {f(r['sec_per_epoch'], '.0f')} | "
            f"{f(r['final_p1'], '.3f')} | {f(r['final_p5'], '.3f')} | "
            f"{f(r['heldout_p1'], '.3f')} | {f(r.get('rel_p1'), '.0%')} | "
            f"{f(r.get('t95_s'), '.0f')} | {f(r.get('t95_ratio'), '.2f')} | "
            f"{f(r.get('e95'), '.1f')} | "
            f"{f(r.get('t100_s'), '.0f')} | {f(r.get('t100_ratio'), '.2f')} | "
            f"{f(r.get('e100'), '.1f')} | "
            f"{f(r['refresh_s'], '.1f')} | {r['load_start']:.1f}/{r['load_end']:.1f} |"
        )
    return "\n".join(lines)


def load_records(paths: list[str]) -> list[dict]:
    recs = []
    for p in paths:
        with open(p) as fh:
            r = json.load(fh)
        if r.get("kind") == "accuracy":
            recs.append(r)
    return recs


def latest_session(directory: str, task: str | None = None) -> list[dict]:
    """The records of the most recent session (of `task`, if given) in `directory`."""
    recs = load_records(sorted(glob.glob(os.path.join(directory, "accuracy-*.json"))))
    if task:
        recs = [r for r in recs if r["task"] == task]
    if not recs:
        return []
    last = max(r["session"] for r in recs)
    return [r for r in recs if r["session"] == last]


# ---- command line ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.accuracy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", choices=TASKS, default="wordnet-synset")
    p.add_argument(
        "--methods",
        default="full,faiss,lsh,uniform",
        help="comma list of full|faiss|lsh|uniform|shared_neg|auto, optionally name@refresh_every",
    )
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument(
        "--max-classes",
        type=int,
        default=None,
        help="synset: random subset of synsets; lemma: of lemmas; teacher: n (default 100000)",
    )
    p.add_argument(
        "--max-examples", type=int, default=None, help="random subset of the training examples"
    )
    p.add_argument(
        "--refresh-every",
        type=int,
        default=100,
        help="index refresh interval in steps for faiss/lsh without @N",
    )
    p.add_argument("--out", default=RESULTS, help="directory for the JSON records")
    p.add_argument("--dim", type=int, default=128, help="d of the output layer")
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of the MLP")
    p.add_argument(
        "--table-lr",
        type=float,
        default=3e-2,
        help="learning rate of the embedding bag and the output layer",
    )
    p.add_argument(
        "--lr-schedule",
        choices=("constant", "linear"),
        default="linear",
        help="linear: every learning rate decays linearly to 0 over --epochs",
    )
    p.add_argument(
        "--output-optimizer",
        choices=("adam", "sparse-adam"),
        default="adam",
        help="adam: every method's output layer gets a dense gradient and torch.optim.Adam "
        "(the same optimizer for all); sparse-adam: faiss/lsh/uniform return sparse gradients "
        "of the candidate rows to SparseAdam (lazy Adam), full keeps Adam",
    )
    p.add_argument("--num-candidates", type=int, default=64, help="|S| with the target")
    p.add_argument("--num-uniform", type=int, default=64, help="|T|")
    p.add_argument(
        "--num-shared", type=int, default=1024, help="M: the shared T of scheme hybrid (and auto)"
    )
    p.add_argument(
        "--shared-negatives", type=int, default=1024, help="K of the shared_neg baseline"
    )
    p.add_argument(
        "--sampler",
        choices=("auto", "uniform", "frequency"),
        default="auto",
        help="SampledSoftmaxLoss sampler (the proposal of T) of the sampled runs (auto: the "
        "library's: frequency under candidate_scheme auto, else uniform)",
    )
    p.add_argument(
        "--num-head",
        type=int,
        default=None,
        help="SampledSoftmaxLoss num_head of the sampled runs: the most frequent targets "
        "scored exactly in the shared T (default: the library's)",
    )
    p.add_argument(
        "--candidate-scheme",
        default="per_example",
        help="SampledSoftmaxLoss candidate_scheme of the faiss/lsh runs",
    )
    p.add_argument(
        "--search-min-mass",
        default="off",
        help="SampledSoftmaxLoss search_min_mass of the faiss/lsh runs, a float, 'auto' (the "
        "library's default) or 'off' (None; this bench's default): no search (S = "
        "{target}, T alone) until a refresh measures this much captured mass",
    )
    p.add_argument(
        "--lsh-nprobe",
        type=int,
        default=None,
        help="lsh (clusters generator): lists read per query (default: the library's, 16)",
    )
    p.add_argument(
        "--auto-target-share",
        type=float,
        default=None,
        help="method=auto: the share of the exact top-(|S| - 1) mass its candidates must hold "
        "(dispatch.AUTO_TARGET_SHARE, set for this run; the label says so); default: the "
        "library's",
    )
    p.add_argument(
        "--rerank-copy",
        choices=sorted(RERANK_COPY),
        default="auto",
        help="SampledSoftmaxLoss rerank_copy of the lsh runs: true = lists scored from a copy "
        "of the rows taken at refresh, false = the live rows, auto = the library's default",
    )
    p.add_argument(
        "--faiss-index",
        choices=("auto", *FAISS_INDEX_KINDS),
        default="auto",
        help="SampledSoftmaxLoss faiss_index of the faiss runs (auto: the library's default)",
    )
    p.add_argument("--eval-examples", type=int, default=8192)
    p.add_argument(
        "--eval-at",
        default=None,
        help="comma list of training wall seconds at which to evaluate too (the first step "
        "at or past each), e.g. 30,60,120,240",
    )
    p.add_argument("--context", type=int, default=8, help="pycode: tokens of context")
    p.add_argument(
        "--context-embed-dim", type=int, default=32, help="pycode: embedding size per position"
    )
    p.add_argument("--evals-per-epoch", type=int, default=2)
    p.add_argument(
        "--lsh-generator",
        default=None,
        help="the lsh path's candidate generator: clusters | tables (default: the "
        "library's, clusters since 2026-11-30; tables = the collision-count SimHash tables)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="stop a run once its training time (--clock) passes this many seconds",
    )
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what --time-limit and --eval-at count: training wall seconds, or the run's "
        "process CPU seconds of training (runs side by side on a shared machine then see the "
        "budgets a dedicated core would give them)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wordnet-dir", default="/usr/share/wordnet")
    p.add_argument("--heldout-fraction", type=float, default=0.1, help="lemma task")
    p.add_argument("--teacher-dim", type=int, default=64)
    p.add_argument("--teacher-sigma", type=float, default=0.15)
    p.add_argument("--examples-per-class", type=int, default=4, help="teacher task")
    p.add_argument(
        "--bayes-examples",
        type=int,
        default=20_000,
        help="teacher task: training inputs the training-set Bayes accuracy is measured on "
        "(each costs n * dim multiply-adds: lower it at 10^7 classes)",
    )
    p.add_argument(
        "--session",
        default=None,
        help="session id shared by the records (default: the start time); give an earlier "
        "session's id to add runs to it (summaries compare runs within a session)",
    )
    p.add_argument("--no-progress", action="store_true")
    harness.add_memory_flag(p)
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    share = args.auto_target_share
    if share is not None and not 0.0 < share < 1.0:
        raise SystemExit(f"--auto-target-share must be in (0, 1), got {share}")
    harness.apply_memory_flag(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = [s.strip() for s in args.methods.split(",") if s.strip()]
    for s in specs:
        parse_method(s, args.refresh_every)
    os.makedirs(args.out, exist_ok=True)
    session = args.session or datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    data, info = load_data(args)
    print(
        f"{args.task}: {info['num_classes']} classes, {info['train_examples']} training "
        f"examples, loaded in {time.perf_counter() - t0:.1f}s; load average "
        f"{os.getloadavg()[0]:.2f}",
        file=sys.stderr,
    )
    records = []
    default_share = dispatch.AUTO_TARGET_SHARE
    for spec in specs:
        if share is not None:  # a candidate value, measured at budgets
            dispatch.AUTO_TARGET_SHARE = share
        try:
            rec = run_one(data, info, spec, args, session)
        finally:
            dispatch.AUTO_TARGET_SHARE = default_share
        name = f"accuracy-{args.task}-{rec['label'].replace('@', '-r')}-{session}.json"
        with open(os.path.join(args.out, name), "w") as fh:
            json.dump(rec, fh, indent=1)
        records.append(rec)
        fin = rec["final"]
        print(
            f"{rec['label']}: P@1 {fin['p1']:.4f} P@5 {fin['p5']:.4f} after "
            f"{rec['train_wall_s']:.1f}s ({len(rec['epoch_seconds'])} epochs), load "
            f"{rec['load_avg_start'][0]:.2f}->{rec['load_avg_end'][0]:.2f}",
            file=sys.stderr,
        )
    print(format_table(summarise(records)))
    return records


if __name__ == "__main__":
    main()
