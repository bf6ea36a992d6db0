"""A SASRec-style sequential recommender over a 10^6-item catalogue: sampled softmax vs full.

    python examples/sasrec.py                # 10^6 items, 300 s of training per method
    python examples/sasrec.py --quick        # a smoke run: 10^5 items, 8 s per method
    python examples/sasrec.py --seconds 900 --methods full,lsh,faiss

Model (Kang & McAuley's SASRec, small): item embedding (n x d) + position embedding -> causal
Transformer encoder -> the hidden state at each position predicts the next item, scored against
the SAME item embedding (tied input/output table). The output layer is a `SampledSoftmaxLoss`
tied to that table: method "full" (the exact chunked softmax over all n items, dense gradient,
Adam) or "lsh" / "faiss" (|S| retrieved + |T| uniform items, sparse gradient of the candidate
rows, SparseAdam for the table). Each method trains for the same wall-clock budget from the same
initial weights and data order; the held-out figures are exact (all n items scored).

Synthetic data, generated with a documented law (no download):
  * popularity: item i (0-based; ids are popularity ranks) has weight (i + 1)^-alpha, Zipf with
    alpha = --zipf (default 1.0);
  * topics: every item belongs to one of --topics topics (a seeded random assignment), so each
    topic holds a Zipf-distributed slice of the catalogue; a topic's mass is the sum of its
    items' weights;
  * sessions: a user starts in a topic drawn by topic mass; before each interaction the user
    stays in the current topic with probability --stay (default 0.85) or jumps to a topic
    drawn by topic mass; the item is drawn from the current topic by item weight.
A model that infers the user's topic from the history can at best predict
p(next = i | topic t) = stay * w_i 1[i in t] / mass_t + (1 - stay) * w_i / sum(w); the
example reports the cross-entropy of this oracle on the held-out interactions as the floor.

Writes sasrec-<time>.png (held-out cross-entropy and HR@10 vs training seconds) and a JSON
record of the curves under --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "triton_softmax").is_dir():  # run from a checkout: use its package
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.harness import cpu_model  # noqa: E402
from triton_softmax import SampledSoftmaxLoss, exact_topk, sampled_softmax_cross_entropy  # noqa: E402


# ---- data ---------------------------------------------------------------------------------
class Catalogue:
    """Zipf item weights, a topic per item, and samplers for items within a topic."""

    def __init__(self, n: int, topics: int, alpha: float, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.n, self.topics = n, topics
        self.weight = (torch.arange(n, dtype=torch.float64) + 1.0).pow(-alpha)  # (n,)
        self.topic = torch.randint(0, topics, (n,), generator=g)  # (n,) topic of each item
        self.by_topic = torch.argsort(self.topic, stable=True)  # item ids grouped by topic
        w_sorted = self.weight[self.by_topic]
        self.cum = torch.cumsum(w_sorted, 0)  # (n,) cumulative weight in topic order
        self.topic_mass = torch.zeros(topics, dtype=torch.float64).index_add_(
            0, self.topic, self.weight
        )
        self.topic_start = torch.cumsum(self.topic_mass, 0) - self.topic_mass  # (topics,)
        self.total = float(self.weight.sum())

    def items_in(self, topic: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """One item per entry of `topic`, drawn by item weight within that topic."""
        u = torch.rand(topic.shape, generator=g, dtype=torch.float64)
        x = self.topic_start[topic] + u * self.topic_mass[topic]
        pos = torch.searchsorted(self.cum, x).clamp_(max=self.n - 1)
        return self.by_topic[pos]

    def sessions(self, users: int, length: int, stay: float, g: torch.Generator):
        """(users, length) item ids and the topic behind each interaction."""
        topic_p = self.topic_mass / self.topic_mass.sum()
        topic = torch.multinomial(topic_p, users, replacement=True, generator=g)
        items = torch.empty(users, length, dtype=torch.long)
        topics = torch.empty(users, length, dtype=torch.long)
        for t in range(length):
            jump = torch.rand(users, generator=g) >= stay
            fresh = torch.multinomial(topic_p, users, replacement=True, generator=g)
            topic = torch.where(jump, fresh, topic)
            topics[:, t] = topic
            items[:, t] = self.items_in(topic, g)
        return items, topics

    def oracle_nll(self, prev_topic: torch.Tensor, item: torch.Tensor, stay: float) -> float:
        """Mean -log p(item | previous topic) of the generating process (the floor)."""
        w = self.weight[item]
        same = (self.topic[item] == prev_topic).double()
        p = stay * same * w / self.topic_mass[prev_topic] + (1 - stay) * w / self.total
        return float(-p.log().mean())


# ---- model --------------------------------------------------------------------------------
class SASRec(nn.Module):
    """(B, L) item ids -> (B, L, d) hidden states (position t has seen items 0..t)."""

    def __init__(self, n: int, d: int, length: int, heads: int, layers: int, sparse: bool):
        super().__init__()
        self.items = nn.Embedding(n, d, sparse=sparse)
        nn.init.normal_(self.items.weight, std=d**-0.5)
        self.pos = nn.Embedding(length, d)
        layer = nn.TransformerEncoderLayer(
            d, heads, dim_feedforward=2 * d, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(length))

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        L = seq.shape[1]
        x = self.items(seq) + self.pos(torch.arange(L, device=seq.device))
        return self.norm(self.encoder(x, mask=self.mask[:L, :L], is_causal=True))


@torch.no_grad()
def evaluate(model: SASRec, seq: torch.Tensor, k: int = 10) -> tuple[float, float]:
    """Exact held-out cross-entropy of the last item and HR@k, all n items scored."""
    model.eval()
    h = model(seq[:, :-1])[:, -1]  # (U, d): state after all but the last item
    W = model.items.weight
    target = seq[:, -1]
    nll = float(sampled_softmax_cross_entropy(h, W, target, method="full"))
    _, top = exact_topk(h, W, k)
    hr = float((top == target[:, None]).any(1).float().mean())
    model.train()
    return nll, hr


def run(method: str, args, train: torch.Tensor, heldout: torch.Tensor) -> dict:
    torch.manual_seed(args.seed)
    sparse = method != "full"
    model = SASRec(args.items, args.dim, args.length - 1, args.heads, args.layers, sparse)
    loss_layer = SampledSoftmaxLoss(
        weight=model.items.weight,  # tied: the output layer scores the item table itself
        method=method,
        num_candidates=args.num_candidates,
        num_uniform=args.num_uniform,
        refresh_every=args.refresh_every,
        sparse_grad=sparse,
        seed=args.seed,
    )
    table = [model.items.weight]
    rest = [p for n, p in model.named_parameters() if n != "items.weight"]
    opts = [torch.optim.Adam(rest, lr=args.lr)]
    opts.append(
        torch.optim.SparseAdam(table, lr=args.lr) if sparse else torch.optim.Adam(table, lr=args.lr)
    )
    order = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(args.seed))
    nll, hr = evaluate(model, heldout)
    curve = [dict(step=0, wall_s=0.0, heldout_nll=nll, hr10=hr, train_loss=float("nan"))]
    wall, step, next_eval = 0.0, 0, args.seconds / args.evals
    bar = tqdm(total=round(args.seconds), desc=method, unit="s", disable=args.no_progress)
    while wall < args.seconds:
        t0 = time.perf_counter()
        a = (step * args.batch) % train.shape[0]
        seq = train[order[a : a + args.batch]]
        h = model(seq[:, :-1])  # (B, L-1, d)
        loss = loss_layer(h.reshape(-1, args.dim), seq[:, 1:].reshape(-1))
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts:
            o.step()
        lv = float(loss.detach())
        dt = time.perf_counter() - t0
        wall += dt
        step += 1
        bar.update(min(round(wall), round(args.seconds)) - bar.n)
        bar.set_postfix(step=step, loss=f"{lv:.2f}")
        if wall >= next_eval or wall >= args.seconds:
            nll, hr = evaluate(model, heldout)
            curve.append(dict(step=step, wall_s=wall, heldout_nll=nll, hr10=hr, train_loss=lv))
            next_eval += args.seconds / args.evals
    bar.close()
    return dict(
        method=method,
        steps=step,
        seconds_per_step=wall / max(step, 1),
        refresh=dict(count=loss_layer.refresh_count, seconds=loss_layer.total_refresh_seconds),
        explain=loss_layer.explain(batch=args.batch * (args.length - 1)),
        curve=curve,
    )


def plot(records: list[dict], oracle: float, unigram: float, path: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = {"full": "black", "lsh": "tab:orange", "faiss": "tab:blue"}
    for r in records:
        xs = [p["wall_s"] for p in r["curve"]]
        c = colors.get(r["method"], "tab:green")
        label = f"{r['method']} ({r['steps']} steps, {r['seconds_per_step']:.2f} s/step)"
        a.plot(xs, [p["heldout_nll"] for p in r["curve"]], "o-", color=c, label=label)
        b.plot(xs, [p["hr10"] for p in r["curve"]], "o-", color=c, label=r["method"])
    a.axhline(oracle, ls="--", color="tab:green", label=f"generating process ({oracle:.2f})")
    a.axhline(unigram, ls=":", color="gray", label=f"popularity only ({unigram:.2f})")
    a.set(xlabel="training seconds", ylabel="held-out cross-entropy (exact)", title=title)
    b.set(xlabel="training seconds", ylabel="held-out HR@10 (exact top-10)")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (~30 s on 2 CPU cores): 10^5 items, 8 s per method, 2,048 users; one "
        "exact step over 10^6 items takes seconds on a CPU",
    )
    p.add_argument("--items", type=int, default=None, help="catalogue size n (default 10^6)")
    p.add_argument("--topics", type=int, default=2000)
    p.add_argument("--zipf", type=float, default=1.0, help="popularity exponent alpha")
    p.add_argument("--stay", type=float, default=0.85, help="P(next item from the same topic)")
    p.add_argument("--users", type=int, default=None, help="training users (default 50,000)")
    p.add_argument("--heldout-users", type=int, default=None, help="default 512 (quick 128)")
    p.add_argument("--length", type=int, default=21, help="interactions per user")
    p.add_argument("--methods", default="full,lsh", help="comma list of full|lsh|faiss")
    p.add_argument("--seconds", type=float, default=None, help="training budget per method")
    p.add_argument("--evals", type=int, default=None, help="held-out evaluations (default 6)")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--batch", type=int, default=None, help="users per step (default 32)")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--num-candidates", type=int, default=64, help="|S|")
    p.add_argument("--num-uniform", type=int, default=64, help="|T|")
    p.add_argument("--refresh-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "plots" / "examples"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    q = args.quick
    args.items = args.items or (100_000 if q else 1_000_000)
    args.users = args.users or (2048 if q else 50_000)
    args.heldout_users = args.heldout_users or (128 if q else 512)
    args.batch = args.batch or (16 if q else 32)
    args.evals = args.evals or (3 if q else 6)
    args.seconds = args.seconds or (8.0 if q else 300.0)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in ("full", "lsh", "faiss"):
            raise SystemExit(f"--methods: unknown method {m!r} (full, lsh, faiss)")

    t0 = time.perf_counter()
    cat = Catalogue(args.items, args.topics, args.zipf, args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    seqs, topics = cat.sessions(args.users + args.heldout_users, args.length, args.stay, g)
    train, heldout = seqs[: args.users], seqs[args.users :]
    last = heldout[:, -1]
    oracle = cat.oracle_nll(topics[args.users :, -2], last, args.stay)
    unigram = float(-(cat.weight[last] / cat.total).log().mean())
    distinct = int(torch.unique(train).numel())
    print(
        f"catalogue n={args.items:,} (Zipf alpha={args.zipf}, {args.topics} topics), "
        f"{args.users:,} users x {args.length} interactions ({distinct:,} distinct items), "
        f"generated in {time.perf_counter() - t0:.1f}s; held-out cross-entropy floor "
        f"{oracle:.3f} nats (popularity only {unigram:.3f})"
    )
    records = []
    for m in methods:
        r = run(m, args, train, heldout)
        end = r["curve"][-1]
        print(
            f"{m}: {r['steps']} steps, {r['seconds_per_step']:.3f} s/step, held-out "
            f"cross-entropy {end['heldout_nll']:.3f}, HR@10 {end['hr10']:.3f} ({r['explain']})"
        )
        records.append(r)
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    record = dict(
        kind="example-sasrec",
        device=dict(
            kind="cpu",
            name=cpu_model(),
            cpu_count=os.cpu_count(),
            torch_threads=torch.get_num_threads(),
        ),
        torch=torch.__version__,
        load_avg=list(os.getloadavg()),
        config=vars(args),
        oracle_nll=oracle,
        unigram_nll=unigram,
        runs=records,
    )
    with open(os.path.join(args.out, f"sasrec-{stamp}.json"), "w") as fh:
        json.dump(record, fh, indent=1)
    title = f"SASRec, n = {args.items:,} items (Zipf {args.zipf}), {args.seconds:.0f} s per method"
    path = plot(records, oracle, unigram, os.path.join(args.out, f"sasrec-{stamp}.png"), title)
    print(f"plot: {path}")
    if not all(math.isfinite(r["curve"][-1]["heldout_nll"]) for r in records):
        raise SystemExit("a run diverged (non-finite held-out loss)")
    return path


if __name__ == "__main__":
    main()
