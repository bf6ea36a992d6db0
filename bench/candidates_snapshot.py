"""Train the WordNet synset model once (faiss path, as bench/lsh_recall_trained.py) and save a
snapshot for bench/candidates.py: the output weight (n, d), the hidden states and targets of
--queries training glosses.

    python -m bench.candidates_snapshot [--epochs 2] [--queries 4096] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from bench import accuracy as acc
from bench.lsh_recall_trained import train_model

DEFAULT_SNAPSHOT = "/tmp/quality/synset-snapshot.pt"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m bench.candidates_snapshot", description=__doc__)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--queries", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--max-classes", type=int, default=None)
    p.add_argument("--wordnet-dir", default="/usr/share/wordnet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_SNAPSHOT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    model, data = train_model(args)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(args.seed + 7)
        idx = torch.randperm(data.num_train, generator=gen)[: args.queries]
        hidden = model.hidden(*data.inputs(idx))
    snap = dict(
        task="wordnet-synset",
        trained_with="faiss",
        epochs=args.epochs,
        weight=model.output.weight.detach().clone(),
        bias=None,
        hidden=hidden.detach().clone(),
        target=data.train_labels[idx].clone(),
        train_seconds=time.perf_counter() - t0,
        device=acc._device(),
        load_avg_start=load0,
        load_avg_end=os.getloadavg(),
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save(snap, args.out)
    print("->", args.out)
    return args.out


if __name__ == "__main__":
    main()
