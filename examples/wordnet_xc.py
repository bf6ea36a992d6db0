"""Extreme classification: the WordNet reverse dictionary (gloss in, synset out).

    python examples/wordnet_xc.py --quick          # 3,000 synsets, full vs lsh, ~20 s of CPU
    python examples/wordnet_xc.py                  # all 117,659 synsets, 1 epoch per method
    python examples/wordnet_xc.py --methods full,faiss,lsh --epochs 3 --max-classes 50000

Each method trains the same model from the same seed and data order: a mean bag of gloss
tokens -> an MLP with a linear skip path -> d -> the output layer, a `SampledSoftmaxLoss`
with method "full" (exact), "faiss" or "lsh" (|S| retrieved + |T| uniform), or "uniform"
(|S| + |T| - 1 uniform samples only). Accuracy (P@1, P@5) is always measured with the exact
softmax. The data (triton_softmax/data/wordnet.py, WordNet 3.0 from Debian's wordnet-base),
the model, the training loop with its tqdm bar and the plot are the project's accuracy
benchmark (bench/accuracy.py, plots/accuracy.py): this script picks settings for a short
demonstration, writes the JSON records and the plot under --out, and prints the summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "triton_softmax").is_dir():  # run from a checkout: use its package and bench/
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench import accuracy  # noqa: E402
from plots.accuracy import plot_session  # noqa: E402


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3,000 synsets, 2 epochs, full vs lsh")
    p.add_argument("--methods", default=None, help="comma list of full|faiss|lsh|uniform")
    p.add_argument("--max-classes", type=int, default=None, help="random subset of synsets")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "plots" / "examples"), help="plot + records")
    p.add_argument("--wordnet-dir", default="/usr/share/wordnet")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = args.methods or ("full,lsh" if args.quick else "full,faiss,lsh,uniform")
    max_classes = args.max_classes or (3000 if args.quick else None)
    epochs = args.epochs or (2 if args.quick else 1)
    bench_args = [
        "--task",
        "wordnet-synset",
        "--methods",
        methods,
        "--epochs",
        str(epochs),
        "--wordnet-dir",
        args.wordnet_dir,
        "--out",
        args.out,
    ]
    if max_classes:
        bench_args += ["--max-classes", str(max_classes)]
    if args.quick:  # a small model and batches: a few steps per epoch over 3,000 classes
        bench_args += ["--batch-size", "256", "--eval-examples", "1024", "--refresh-every", "10"]
        bench_args += ["--dim", "64", "--embed-dim", "64", "--hidden", "128"]
        bench_args += ["--num-candidates", "32", "--num-uniform", "32"]
    if args.no_progress:
        bench_args.append("--no-progress")
    bargs = accuracy.build_parser().parse_args(bench_args)
    try:
        data, info = accuracy.load_data(bargs)
    except FileNotFoundError as e:  # WordNetNotFound
        raise SystemExit(str(e)) from None
    print(f"wordnet-synset: {info['num_classes']} classes, {info['train_examples']} glosses")
    os.makedirs(args.out, exist_ok=True)
    session = "example-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    records = []
    for spec in methods.split(","):
        rec = accuracy.run_one(data, info, spec.strip(), bargs, session)
        name = f"accuracy-wordnet-synset-{rec['label'].replace('@', '-r')}-{session}.json"
        with open(os.path.join(args.out, name), "w") as fh:
            json.dump(rec, fh, indent=1)
        records.append(rec)
        fin = rec["final"]
        print(
            f"{rec['label']}: P@1 {fin['p1']:.3f} P@5 {fin['p5']:.3f} in {rec['train_wall_s']:.1f}s"
        )
    print(accuracy.format_table(accuracy.summarise(records)))
    path = plot_session(records, os.path.join(args.out, f"wordnet-xc-{session}.png"))
    print(f"plot: {path}")
    return path


if __name__ == "__main__":
    main()
