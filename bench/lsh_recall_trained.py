"""Why lsh scores no better than uniform sampling on WordNet: SimHash recall on a trained model.

    python -m bench.lsh_recall_trained [--epochs 2] [--queries 2048] [--out DIR]

Trains the accuracy benchmark's synset model (bench/accuracy.py, all 117,659 synsets) with
the faiss output layer for --epochs, then, on the trained weights and the hidden states of
--queries training glosses, measures:
  - cosines between a query and its target, its exact top-2..33 classes by logit (the hard
    negatives the estimator wants in S), and random classes (median, 95%, 99.9%);
  - for SimHash tables over a grid of K bits x L tables x B reads per bucket (the MIPS
    transform the lsh path uses), the recall of the exact top-32 (target excluded) among
    the |S| - 1 = 63 retrieved candidates, and the search time per 1024 queries.
Random retrieval would recall 63 / n = 0.05% of them. One JSON record goes to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import time

import torch

from bench import accuracy as acc
from triton_softmax import LSHIndex, exact_topk


def train_model(args) -> tuple[acc.Model, acc.Data]:
    argv = ["--task", "wordnet-synset", "--output-optimizer", "sparse-adam"]
    argv += ["--seed", str(args.seed), "--wordnet-dir", args.wordnet_dir]
    argv += ["--batch-size", str(args.batch_size)]
    if args.max_classes:
        argv += ["--max-classes", str(args.max_classes)]
    targs = acc.build_parser().parse_args(argv)
    data, _ = acc.load_data(targs)
    torch.manual_seed(args.seed)
    model = acc.Model(data, "faiss", 100, targs)
    opts = model.optimizers(targs.lr, targs.table_lr)
    n_train, bs = data.num_train, targs.batch_size
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(epoch))
        for s in range(math.ceil(n_train / bs)):
            idx = order[s * bs : (s + 1) * bs]
            loss = acc.train_step(model, opts, [], idx, data)
        print(f"epoch {epoch + 1}: loss {loss:.3f}, {time.perf_counter() - t0:.0f}s", flush=True)
    return model, data


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.lsh_recall_trained", description=__doc__)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--queries", type=int, default=2048)
    p.add_argument("--bits", default="6,8,10,12")
    p.add_argument("--tables", default="8,16,32")
    p.add_argument("--reads", default="32,128", help="B: ids read per bucket")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--max-classes", type=int, default=None, help="random subset of synsets")
    p.add_argument("--wordnet-dir", default="/usr/share/wordnet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=acc.RESULTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    model, data = train_model(args)
    W = model.output.weight.detach()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(args.seed + 7)
        idx = torch.randperm(data.num_train, generator=gen)[: args.queries]
        h = model.hidden(*data.inputs(idx))
        target = data.train_labels[idx]
    _, top = exact_topk(h, W, 33)
    p1 = (top[:, 0] == target).float().mean().item()
    # the hard negatives: the exact top-33 by logit without the target (32 per query)
    is_t = top == target.unsqueeze(1)
    hard = torch.where(is_t, top.new_full((), -2), top)
    hard = torch.stack([r[r >= 0][:32] for r in hard])
    wn = W / W.norm(dim=1, keepdim=True)
    hn = h / h.norm(dim=1, keepdim=True)
    q = torch.tensor([0.5, 0.95, 0.999])
    rand = torch.randint(W.shape[0], (2000,), generator=gen)
    cos = dict(
        target_median=(hn * wn[target]).sum(1).median().item(),
        hard_negatives_median=torch.einsum("nd,nkd->nk", hn, wn[hard]).median().item(),
        random_quantiles=dict(
            zip(("0.5", "0.95", "0.999"), (hn @ wn[rand].T).flatten().quantile(q).tolist())
        ),
    )
    grid = []
    for K in (int(x) for x in args.bits.split(",")):
        for L in (int(x) for x in args.tables.split(",")):
            for B in (int(x) for x in args.reads.split(",")):
                index = LSHIndex(W.shape[1], K, L, seed=args.seed, max_per_bucket=B).build(W)
                t0 = time.perf_counter()
                ids = index.search(h, 63)
                ms = (time.perf_counter() - t0) * 1000 * 1024 / h.shape[0]
                recall = (ids.unsqueeze(2) == hard.unsqueeze(1)).any(1).float().mean().item()
                row = dict(
                    bits=K,
                    tables=L,
                    reads=B,
                    recall_top32=recall,
                    search_ms_per_1024=ms,
                    filled=(ids >= 0).float().mean().item(),
                )
                grid.append(row)
                print(row, flush=True)
    rec = dict(
        kind="lsh_recall_trained",
        started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=acc._device(),
        versions=acc._versions(),
        config=vars(args),
        num_classes=int(W.shape[0]),
        probe_p1=p1,
        random_recall=63 / W.shape[0],
        cosines=cos,
        grid=grid,
        load_avg_start=load0,
        load_avg_end=os.getloadavg(),
    )
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"lsh_recall_trained-{stamp}.json")
    with open(path, "w") as fh:
        json.dump(rec, fh, indent=1)
    print(json.dumps(dict(p1=p1, cosines=cos)), "\n->", path)
    return rec


if __name__ == "__main__":
    main()
