#!/usr/bin/env bash
# The accuracy runs behind the README's Accuracy section (issue 5), in the order they ran.
# Each run is alone in its process, one torch thread, one after another; records land in
# bench/results/accuracy-*-<session>.json. Usage: bash scripts/accuracy_runs.sh [synset|refresh|teacher|teacher6-sampled|teacher6-full|lemma|lemma-a|lemma-b|synset-full|synset-long|teacher6|teacher6-faiss|teacher6-full-capped|teacher7-throughput|synset-pair|synset-baseline|synset-warm|synset-baseline6|synset-copy|synset-t1024|synset-kept|synset-kept2|synset-full-kept|synset-scheme|synset-ivfpq|synset-ivfpq-t1024|synset-ivfpq-k1024|synset-ivfpq-search|synset-lsh-ivfpq|synset-lsh-ivfpq12|synset-ivfpq-sparse-adam|synset-ivfpq-t|synset-ivfpq-seed1]
set -euo pipefail
cd "$(dirname "$0")/.."
S=${SESSION:-$(date -u +%Y%m%d-%H%M%S)}
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
  synset-full)  # session 3: the exact softmax alone again (6 epochs), beside synset-long
    run --task wordnet-synset --epochs 6 --methods full ;;
  synset-long)  # session 3: the sampled methods train twice as many epochs in the same session
    run --task wordnet-synset --epochs 12 --methods faiss,uniform,lsh ;;
  teacher6)  # session 3: 10^6 classes, 2 examples each, 3 epochs, sparse output gradients
    run --task teacher --max-classes 1000000 --examples-per-class 2 --epochs 3 --dim 64 \
      --output-optimizer sparse-adam --eval-examples 2048 --evals-per-epoch 1 \
      --methods lsh,uniform ;;
  teacher6-faiss)  # session 3: faiss costs 0.8 s/step here (IVF search), so one epoch of its own
    run --task teacher --max-classes 1000000 --examples-per-class 2 --epochs 1 --dim 64 \
      --output-optimizer sparse-adam --eval-examples 2048 --evals-per-epoch 1 \
      --methods faiss ;;
  teacher6-full-capped)  # session 3: the exact softmax at 10^6 classes, cut at TIME_LIMIT s
    run --task teacher --max-classes 1000000 --examples-per-class 2 --epochs 3 --dim 64 \
      --output-optimizer sparse-adam --eval-examples 2048 --evals-per-epoch 1 \
      --methods full --time-limit "${TIME_LIMIT:-1500}" ;;
  teacher7-throughput)  # session 3: 10^7 classes: memory, step times and the first minutes only
    run --task teacher --max-classes 10000000 --examples-per-class 1 --epochs 1 --dim 64 \
      --output-optimizer sparse-adam --eval-examples 512 --bayes-examples 512 \
      --evals-per-epoch 1 --refresh-every 1000 --methods lsh,uniform --time-limit 300
    run --task teacher --max-classes 10000000 --examples-per-class 1 --epochs 1 --dim 64 \
      --output-optimizer sparse-adam --eval-examples 512 --bayes-examples 512 \
      --evals-per-epoch 1 --methods full --time-limit 1 ;;
  synset-pair)  # session 5: faiss and the lsh default (clusters) side by side, 12 epochs each
    run --task wordnet-synset --epochs 12 --methods faiss &
    run --task wordnet-synset --epochs 12 --methods lsh
    wait ;;
  synset-baseline)  # session 5: the hand-written shared-negative baseline, K = 1024, 4096, 16384
    run --task wordnet-synset --epochs 12 --methods shared_neg --shared-negatives 1024
    run --task wordnet-synset --epochs 12 --methods shared_neg --shared-negatives 4096
    # K = 16384: about the lsh run's time per epoch (matched by measurement, not by formula)
    run --task wordnet-synset --epochs 12 --methods shared_neg --shared-negatives 16384 ;;
  synset-warm)  # session 6: lsh with one shared T of 4096 and no search until a refresh measures
    # 0.3 of the non-target mass captured (search_min_mass), beside the K = 4096 baseline
    run --task wordnet-synset --epochs 12 --methods lsh --candidate-scheme shared_samples \
      --num-uniform 4096 --search-min-mass 0.3 &
    run --task wordnet-synset --epochs 12 --methods shared_neg --shared-negatives 4096
    wait ;;
  synset-baseline6)  # session 6: the baseline at K = 1024 and at K = 9216 (about the
    # synset-warm lsh run's 75 s per epoch, interpolated between K = 4096 and 16384), side by side
    run --task wordnet-synset --epochs 12 --methods shared_neg --shared-negatives 9216 &
    run --task wordnet-synset --epochs 12 --methods shared_neg --shared-negatives 1024
    wait ;;
  synset-copy)  # session 7: synset-warm's lsh run with the lists scored from a copy of the rows
    # (the new CPU default) beside the same run scoring the live rows, side by side
    for copy in true false; do
      run --task wordnet-synset --epochs 12 --methods lsh --candidate-scheme shared_samples \
        --num-uniform 4096 --search-min-mass 0.3 --rerank-copy $copy &
    done
    wait ;;
  synset-t1024)  # session 8: synset-warm's lsh run with T = 1024 (the search-off phase is then
    # the K = 1024 baseline's step) beside the K = 1024 baseline, side by side
    run --task wordnet-synset --epochs 12 --methods lsh --candidate-scheme shared_samples \
      --num-uniform 1024 --search-min-mass 0.3 &
    run --task wordnet-synset --epochs 12 --methods shared_neg --shared-negatives 1024
    wait ;;
  synset-kept)  # session 8: synset-warm's lsh run and the K = 1024 baseline, side by side, both
    # with freed memory kept in the process (triton_softmax.keep_freed_memory)
    run --task wordnet-synset --epochs 12 --methods lsh --candidate-scheme shared_samples \
      --num-uniform 4096 --search-min-mass 0.3 --keep-freed-memory &
    run --task wordnet-synset --epochs 12 --methods shared_neg --shared-negatives 1024 \
      --keep-freed-memory
    wait ;;
  synset-kept2)  # session 8: the K = 4096 baseline and the T = 1024 lsh run, memory kept
    run --task wordnet-synset --epochs 12 --methods lsh --candidate-scheme shared_samples \
      --num-uniform 1024 --search-min-mass 0.3 --keep-freed-memory &
    run --task wordnet-synset --epochs 12 --methods shared_neg --shared-negatives 4096 \
      --keep-freed-memory
    wait ;;
  synset-scheme)  # session 9: per-example T against one shared T at the same |S| = |T| = 64
    # (the default scheme against the one issue 19 asks for), memory kept, side by side
    run --task wordnet-synset --epochs 12 --methods lsh --candidate-scheme per_example \
      --keep-freed-memory &
    run --task wordnet-synset --epochs 12 --methods lsh --candidate-scheme shared_samples \
      --keep-freed-memory
    wait ;;
  synset-ivfpq)  # session 10: FAISS IVF-Flat against IVF lists of 4-bit PQ codes (fast-scan),
    # the synset recipe (6 epochs, |S| = |T| = 64), memory kept, side by side
    run --task wordnet-synset --epochs 6 --methods faiss --faiss-index ivf --keep-freed-memory &
    run --task wordnet-synset --epochs 6 --methods faiss --faiss-index ivfpq --keep-freed-memory
    wait ;;
  synset-ivfpq-t1024)  # session 10: synset-kept2's recipe on the faiss path with 4-bit PQ lists
    # (shared T = 1024, search from a captured mass of 0.3) beside the K = 4096 baseline
    ivfpq_beside_baseline 4096 --search-min-mass 0.3 ;;
  synset-ivfpq-k1024)  # session 10: the same faiss ivfpq run beside the K = 1024 baseline
    ivfpq_beside_baseline 1024 --search-min-mass 0.3 ;;
  synset-ivfpq-search)  # session 10: the faiss ivfpq run searching from the first step (no
    # search_min_mass: its search is cheap now) beside the K = 4096 baseline
    ivfpq_beside_baseline 4096 ;;
  synset-lsh-ivfpq)  # session 10: issue 18's recipe (6 epochs, |S| = |T| = 64, per-example T),
    # lsh against faiss's new default index, side by side, memory kept
    run --task wordnet-synset --epochs 6 --methods lsh --keep-freed-memory &
    run --task wordnet-synset --epochs 6 --methods faiss --faiss-index ivfpq --keep-freed-memory
    wait ;;
  synset-ivfpq-sparse-adam)  # session 11: the k1024 pair with lazy Adam (SparseAdam) on the
    # output layer of both runs instead of Adam
    ivfpq_pair 1024 sparse-adam 0 ;;
  synset-ivfpq-t)  # session 11: the shared-T faiss ivfpq run with |T| = 256 and 512, side by side
    run --task wordnet-synset --epochs 12 --methods faiss --faiss-index ivfpq \
      --candidate-scheme shared_samples --num-uniform 256 --keep-freed-memory \
      --search-min-mass 0.3 &
    run --task wordnet-synset --epochs 12 --methods faiss --faiss-index ivfpq \
      --candidate-scheme shared_samples --num-uniform 512 --keep-freed-memory \
      --search-min-mass 0.3
    wait ;;
  synset-ivfpq-seed1)  # session 11: the k1024 pair again with --seed 1 (other initial weights,
    # data order and samples)
    ivfpq_pair 1024 adam 1 ;;
  synset-lsh-ivfpq12)  # session 11: the same on the recipe's 12 epochs (issue 18's recipe,
    # accuracy-wordnet-synset-*-s3synset.json), side by side, memory kept
    run --task wordnet-synset --epochs 12 --methods lsh --keep-freed-memory &
    run --task wordnet-synset --epochs 12 --methods faiss --faiss-index ivfpq --keep-freed-memory
    wait ;;
  synset-full-kept)  # session 8: the exact softmax (6 epochs, as synset-full) with memory kept
    run --task wordnet-synset --epochs 6 --methods full --keep-freed-memory ;;
esac
