#!/usr/bin/env bash
# The accuracy runs behind the README's Accuracy section (issue 5), in the order they ran.
# Each run is alone in its process, one torch thread, one after another; records land in
# bench/results/accuracy-*-<session>.json. Usage: bash scripts/accuracy_runs.sh [synset|refresh|teacher|teacher6-sampled|teacher6-full|lemma|lemma-a|lemma-b]
set -euo pipefail
cd "$(dirname "$0")/.."
S=${SESSION:-$(date -u +%Y%m%d-%H%M%S)}
run() { python3 -m bench.accuracy --threads 1 --no-progress --session "$S" "$@"; }
case "${1:-synset}" in
  synset)   # 117,659 classes, 6 epochs, |S| = |T| = 64, index refresh every 100 steps
    run --task wordnet-synset --epochs 6 --methods full,faiss,lsh,uniform ;;
  refresh)  # what the refresh interval does: 10 and 1000 steps against the default 100
    run --task wordnet-synset --epochs 6 --methods faiss@10,faiss@1000,lsh@1000 ;;
  teacher)  # synthetic teacher with a known Bayes accuracy, 10^5 classes, 2 examples each
    run --task teacher --max-classes 100000 --examples-per-class 2 --epochs 3 \
      --methods full,faiss,lsh,uniform ;;
  teacher6-sampled)  # 10^6 classes, one example each, one epoch
    run --task teacher --max-classes 1000000 --examples-per-class 1 --epochs 1 \
      --methods lsh,uniform,faiss ;;
  teacher6-full)  # the exact softmax at 10^6 classes gets what 20 minutes allow
    run --task teacher --max-classes 1000000 --examples-per-class 1 --epochs 1 \
      --methods full --time-limit 1200 ;;
  lemma)    # every lemma (about 148K classes), held-out senses, 3 epochs
    run --task wordnet-lemma --epochs 3 --methods full,faiss,lsh,uniform ;;
  lemma-a)  # the same split over two cores: full and faiss here, lsh and uniform in lemma-b
    run --task wordnet-lemma --epochs 3 --methods full,faiss ;;
  lemma-b)
    run --task wordnet-lemma --epochs 3 --methods lsh,uniform ;;
esac
