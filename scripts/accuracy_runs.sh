#!/usr/bin/env bash
# The accuracy runs behind the committed records (docs/accuracy.md), one recipe each. Each run
# is alone in its process, one torch thread; records land in
# bench/results/accuracy-<task>-<method...>-<TAG>.json, TAG = $TAG or <date>-<recipe>.
# Usage: bash scripts/accuracy_runs.sh RECIPE  (the recipes are the case labels below; each
# comment names the records it wrote, by their tag)
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${1:-synset}
S=${TAG:-$(date -u +%Y%m%d)-$RECIPE}
run() { python3 -m bench.accuracy --threads 1 --no-progress --session "$S" "$@"; }
# faiss ivfpq with a shared T of 1024 (and the extra options) beside the baseline with K = $1,
# both 12 epochs with memory kept
ivfpq_beside_baseline() {
  local K=$1
  shift
  run --task wordnet-synset --epochs 12 --methods faiss --faiss-index ivfpq \
    --candidate-scheme shared_samples --num-uniform 1024 --keep-freed-memory "$@" &
  run --task wordnet-synset --epochs 12 --methods shared_neg --shared-negatives "$K" \
    --keep-freed-memory
  wait
}
# faiss ivfpq (shared T = 1,024, search_min_mass 0.3) beside the baseline with K = $1, both
# 12 epochs with memory kept, the output layer's optimizer $2 (adam | sparse-adam), seed $3
ivfpq_pair() {
  run --task wordnet-synset --epochs 12 --methods faiss --faiss-index ivfpq \
    --candidate-scheme shared_samples --num-uniform 1024 --keep-freed-memory \
    --search-min-mass 0.3 --output-optimizer "$2" --seed "$3" &
  run --task wordnet-synset --epochs 12 --methods shared_neg --shared-negatives "$1" \
    --keep-freed-memory --output-optimizer "$2" --seed "$3"
  wait
}
case "$RECIPE" in
  synset)   # 117,659 classes, 6 epochs, |S| = |T| = 64, index refresh every 100 steps (tag 20261127-synset ran synset-full + synset-long)
    run --task wordnet-synset --epochs 6 --methods full,faiss,lsh,uniform ;;
  refresh)  # the refresh interval: 10 and 1000 steps against the default 100 (20261127-refresh)
    run --task wordnet-synset --epochs 6 --methods faiss@10,faiss@1000,lsh@1000 ;;
  teacher)  # synthetic teacher with a known Bayes accuracy, 10^5 classes, 2 examples each (20261127-teacher5)
    run --task teacher --max-classes 100000 --examples-per-class 2 --epochs 3 \
      --methods full,faiss,lsh,uniform ;;
  lemma)    # every lemma (about 148K classes), held-out senses, 3 epochs (20261127-lemma)
    run --task wordnet-lemma --epochs 3 --methods full,faiss,lsh,uniform ;;
  lemma-a)  # the same split over two cores: full and faiss here, lsh and uniform in lemma-b
    run --task wordnet-lemma --epochs 3 --methods full,faiss ;;
  lemma-b)
    run --task wordnet-lemma --epochs 3 --methods lsh,uniform ;;
  synset-full)  # the exact softmax alone (6 epochs), beside synset-long (20261127-synset)
    run --task wordnet-synset --epochs 6 --methods full ;;
  synset-long)  # the sampled methods train twice as many epochs (20261127-synset)
    run --task wordnet-synset --epochs 12 --methods faiss,uniform,lsh ;;
  teacher6)  # 20261127-teacher6: 10^6 classes, 2 examples each, 3 epochs, sparse output gradients
    run --task teacher --max-classes 1000000 --examples-per-class 2 --epochs 3 --dim 64 \
      --output-optimizer sparse-adam --eval-examples 2048 --evals-per-epoch 1 \
      --methods lsh,uniform ;;
  teacher6-faiss)  # 20261127-teacher6: faiss costs 0.8 s/step here (IVF search), so one epoch of its own
    run --task teacher --max-classes 1000000 --examples-per-class 2 --epochs 1 --dim 64 \
      --output-optimizer sparse-adam --eval-examples 2048 --evals-per-epoch 1 \
      --methods faiss ;;
  teacher6-full-capped)  # 20261127-teacher6: the exact softmax at 10^6 classes, cut at TIME_LIMIT s
    run --task teacher --max-classes 1000000 --examples-per-class 2 --epochs 3 --dim 64 \
      --output-optimizer sparse-adam --eval-examples 2048 --evals-per-epoch 1 \
      --methods full --time-limit "${TIME_LIMIT:-1500}" ;;
  teacher7-throughput)  # 20261127-teacher7: 10^7 classes: memory, step times and the first minutes only
    run --task teacher --max-classes 10000000 --examples-per-class 1 --epochs 1 --dim 64 \
      --output-optimizer sparse-adam --eval-examples 512 --bayes-examples 512 \
      --evals-per-epoch 1 --refresh-every 1000 --methods lsh,uniform --time-limit 300
    run --task teacher --max-classes 10000000 --examples-per-class 1 --epochs 1 --dim 64 \
      --output-optimizer sparse-adam --eval-examples 512 --bayes-examples 512 \
      --evals-per-epoch 1 --methods full --time-limit 1 ;;
  synset-scheme)  # 20261201-scheme: per-example T against one shared T at the same |S| = |T| = 64
    # (per-example T was the default then), memory kept, side by side
    run --task wordnet-synset --epochs 12 --methods lsh --candidate-scheme per_example \
      --keep-freed-memory &
    run --task wordnet-synset --epochs 12 --methods lsh --candidate-scheme shared_samples \
      --keep-freed-memory
    wait ;;
  synset-ivfpq)  # 20261201-ivfpq: FAISS IVF-Flat against IVF lists of 4-bit PQ codes (fast-scan),
    # the synset recipe (6 epochs, |S| = |T| = 64), memory kept, side by side
    run --task wordnet-synset --epochs 6 --methods faiss --faiss-index ivf --keep-freed-memory &
    run --task wordnet-synset --epochs 6 --methods faiss --faiss-index ivfpq --keep-freed-memory
    wait ;;
  synset-ivfpq-t1024)  # 20261201-ivfpq: the faiss path with 4-bit PQ lists
    # (shared T = 1024, search from a captured mass of 0.3) beside the K = 4096 baseline
    ivfpq_beside_baseline 4096 --search-min-mass 0.3 ;;
  synset-ivfpq-k1024)  # 20261201-k1024: the same faiss ivfpq run beside the K = 1024 baseline
    ivfpq_beside_baseline 1024 --search-min-mass 0.3 ;;
  synset-ivfpq-search)  # 20261201-search: the faiss ivfpq run searching from the first step (no
    # search_min_mass: its search is cheap now) beside the K = 4096 baseline
    ivfpq_beside_baseline 4096 ;;
  synset-lsh-ivfpq)  # 20261201-lsh: the synset recipe (6 epochs, |S| = |T| = 64, per-example T),
    # lsh against faiss's new default index, side by side, memory kept
    run --task wordnet-synset --epochs 6 --methods lsh --keep-freed-memory &
    run --task wordnet-synset --epochs 6 --methods faiss --faiss-index ivfpq --keep-freed-memory
    wait ;;
  synset-ivfpq-sparse-adam)  # 20261201-sparse: the k1024 pair with lazy Adam (SparseAdam) on the
    # output layer of both runs instead of Adam
    ivfpq_pair 1024 sparse-adam 0 ;;
  synset-ivfpq-t)  # 20261201-t: the shared-T faiss ivfpq run with |T| = 256 and 512, side by side
    run --task wordnet-synset --epochs 12 --methods faiss --faiss-index ivfpq \
      --candidate-scheme shared_samples --num-uniform 256 --keep-freed-memory \
      --search-min-mass 0.3 &
    run --task wordnet-synset --epochs 12 --methods faiss --faiss-index ivfpq \
      --candidate-scheme shared_samples --num-uniform 512 --keep-freed-memory \
      --search-min-mass 0.3
    wait ;;
  synset-ivfpq-seed1)  # 20261201-seed1: the k1024 pair again with --seed 1 (other initial weights,
    # data order and samples)
    ivfpq_pair 1024 adam 1 ;;
  synset-lsh-ivfpq12)  # 20261201-lsh12: the same on 12 epochs (as 20261127-synset's sampled
    # runs), side by side, memory kept
    run --task wordnet-synset --epochs 12 --methods lsh --keep-freed-memory &
    run --task wordnet-synset --epochs 12 --methods faiss --faiss-index ivfpq --keep-freed-memory
    wait ;;
  synset-full-kept)  # 20261130-kept: the exact softmax (6 epochs, as synset-full) with memory kept
    run --task wordnet-synset --epochs 6 --methods full --keep-freed-memory ;;
esac
