"""Next-token language modelling with a Hugging Face model patched in one line.

    python examples/hf_causal_lm.py --quick      # ~30 s on 2 CPU cores
    python examples/hf_causal_lm.py --vocab 32000 --steps 1000 --methods hf,full,lsh

A tiny Llama (transformers.LlamaForCausalLM built from a LlamaConfig, randomly initialised, no
download) learns the glosses of WordNet 3.0 (Debian's wordnet-base, read by
triton_softmax/data/wordnet.py) as running text, word-level: the --vocab most frequent words,
<unk>, and <eos> after each gloss. Without WordNet it falls back to a synthetic corpus (a
first-order Markov chain over Zipf-distributed words) and says so.

Each method trains the same initial weights on the same batches with AdamW:

  hf     the model as transformers ships it: logits (B, T, V) materialised, then the loss
  full   `patch(model)`: the exact loss from the hidden states and lm_head.weight, in chunks,
         without the logits tensor (tied embeddings, as here, work unchanged)
  lsh    `patch(model, method="lsh", ...)`: sampled softmax, |S| retrieved + |T| uniform words
  faiss  `patch(model, method="faiss", ...)`: the same with a FAISS index

The held-out loss is always exact (a patched model in eval mode computes the exact loss).
Writes hf-lm-<time>.png (training and held-out loss) and a JSON record under --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "triton_softmax").is_dir():  # run from a checkout: use its package
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.harness import cpu_model  # noqa: E402
from triton_softmax.integrations.hf import patch  # noqa: E402


def wordnet_corpus(vocab: int, root: str) -> tuple[torch.Tensor, list[str], str]:
    from triton_softmax.data.wordnet import read_synsets, tokenize

    glosses = [tokenize(s.gloss) for s in read_synsets(root)]
    counts = Counter(t for g in glosses for t in g)
    words = ["<unk>", "<eos>"] + [w for w, _ in counts.most_common(vocab - 2)]
    index = {w: i for i, w in enumerate(words)}
    ids = [i for g in glosses for i in [index.get(t, 0) for t in g] + [1]]
    return torch.tensor(ids, dtype=torch.long), words, f"WordNet 3.0 glosses ({root})"


def markov_corpus(vocab: int, tokens: int, seed: int) -> tuple[torch.Tensor, list[str], str]:
    """Each word has 8 likely successors (Zipf-weighted words, a seeded random table)."""
    g = torch.Generator().manual_seed(seed)
    zipf = (torch.arange(vocab, dtype=torch.float) + 1).pow(-1.0)
    successors = torch.multinomial(zipf, vocab * 8, replacement=True, generator=g).view(vocab, 8)
    out = torch.empty(tokens, dtype=torch.long)
    cur = 0
    choices = torch.randint(0, 8, (tokens,), generator=g)
    for t in range(tokens):
        cur = int(successors[cur, choices[t]])
        out[t] = cur
    return out, [f"w{i}" for i in range(vocab)], "synthetic Zipf-Markov corpus (no WordNet)"


def build_model(vocab: int, args):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(args.seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.dim,
        intermediate_size=2 * args.dim,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=args.seq_len,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).float().train()


@torch.no_grad()
def heldout_loss(model, data: torch.Tensor, batch: int) -> float:
    model.eval()
    losses = [
        float(model(input_ids=data[a : a + batch], labels=data[a : a + batch]).loss)
        for a in range(0, data.shape[0], batch)
    ]
    model.train()
    return sum(losses) / len(losses)


def run(method: str, args, train: torch.Tensor, heldout: torch.Tensor, vocab: int) -> dict:
    model = build_model(vocab, args)
    if method != "hf":
        patch(
            model,
            method=method,
            num_candidates=args.num_candidates,
            num_uniform=args.num_uniform,
            refresh_every=args.refresh_every,
        )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    order = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(args.seed))
    curve = [dict(step=0, wall_s=0.0, heldout=heldout_loss(model, heldout, args.batch))]
    train_losses = []
    wall = 0.0
    every = max(1, args.steps // args.evals)
    for step in tqdm(range(1, args.steps + 1), desc=method, disable=args.no_progress):
        t0 = time.perf_counter()
        a = ((step - 1) * args.batch) % train.shape[0]
        ids = train[order[a : a + args.batch]]
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        train_losses.append(float(loss.detach()))
        wall += time.perf_counter() - t0
        if step % every == 0 or step == args.steps:
            curve.append(
                dict(step=step, wall_s=wall, heldout=heldout_loss(model, heldout, args.batch))
            )
    return dict(
        method=method,
        steps=args.steps,
        seconds_per_step=wall / args.steps,
        train_loss=train_losses,
        curve=curve,
    )


def plot(records: list[dict], path: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = {"hf": "gray", "full": "black", "lsh": "tab:orange", "faiss": "tab:blue"}
    for r in records:
        c = colors.get(r["method"], "tab:green")
        label = f"{r['method']} ({1000 * r['seconds_per_step']:.0f} ms/step)"
        a.plot(range(1, len(r["train_loss"]) + 1), r["train_loss"], color=c, alpha=0.8, label=label)
        b.plot([p["wall_s"] for p in r["curve"]], [p["heldout"] for p in r["curve"]], "o-", color=c)
    a.set(xlabel="step", ylabel="training loss (sampled methods: the estimate)", title=title)
    b.set(xlabel="training seconds", ylabel="held-out loss (exact)")
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="vocab 4,096, 20 steps per method")
    p.add_argument("--methods", default="hf,full,lsh", help="comma list of hf|full|lsh|faiss")
    p.add_argument("--vocab", type=int, default=None, help="words kept (default 16,384)")
    p.add_argument("--steps", type=int, default=None, help="steps per method (default 300)")
    p.add_argument("--evals", type=int, default=None, help="held-out evaluations (default 5)")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--num-candidates", type=int, default=128, help="|S|")
    p.add_argument("--num-uniform", type=int, default=128, help="|T|")
    p.add_argument("--refresh-every", type=int, default=20)
    p.add_argument("--heldout-seqs", type=int, default=None, help="default 64 (quick 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--wordnet-dir", default="/usr/share/wordnet")
    p.add_argument("--out", default=str(ROOT / "plots" / "examples"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.vocab = args.vocab or (4096 if args.quick else 16384)
    args.steps = args.steps or (20 if args.quick else 300)
    args.evals = args.evals or (2 if args.quick else 5)
    args.heldout_seqs = args.heldout_seqs or (32 if args.quick else 64)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in ("hf", "full", "lsh", "faiss"):
            raise SystemExit(f"--methods: unknown method {m!r} (hf, full, lsh, faiss)")
    try:
        tokens, words, source = wordnet_corpus(args.vocab, args.wordnet_dir)
    except FileNotFoundError:
        tokens, words, source = markov_corpus(args.vocab, 400_000, args.seed)
    seqs = tokens[: tokens.numel() // args.seq_len * args.seq_len].view(-1, args.seq_len)
    heldout, train = seqs[: args.heldout_seqs], seqs[args.heldout_seqs :]
    print(
        f"{source}: {tokens.numel():,} tokens, vocab {len(words):,}, {train.shape[0]:,} sequences"
    )
    records = [run(m, args, train, heldout, len(words)) for m in methods]
    for r in records:
        print(
            f"{r['method']}: {1000 * r['seconds_per_step']:.0f} ms/step, held-out loss "
            f"{r['curve'][0]['heldout']:.3f} -> {r['curve'][-1]['heldout']:.3f}"
        )
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(args.out, f"hf-lm-{stamp}.json"), "w") as fh:
        json.dump(
            dict(
                kind="example-hf-lm",
                device=dict(
                    kind="cpu",
                    name=cpu_model(),
                    cpu_count=os.cpu_count(),
                    torch_threads=torch.get_num_threads(),
                ),
                source=source,
                config=vars(args),
                load_avg=os.getloadavg(),
                torch=torch.__version__,
                runs=records,
            ),
            fh,
            indent=1,
        )
    title = f"tiny Llama, vocab {len(words):,}, {args.steps} steps"
    path = plot(records, os.path.join(args.out, f"hf-lm-{stamp}.png"), title)
    print(f"plot: {path}")
    return path


if __name__ == "__main__":
    main()
