#!/usr/bin/env bash
# Time-to-quality runs that chose candidate_scheme="auto" (2026-12-07): two runs side by side
# (they see the same load), one torch thread each, |S| = |T| = 64, batch 1024, evaluated at
# fixed training wall-clock budgets. Usage: bash scripts/defaults_runs.sh PAIR [OUT]
#   pycode-faiss      faiss: per_example beside one shared T of 1,024
#   pycode-base       the hand-written baseline (K = 1,024) beside the exact softmax
#   pycode-full       faiss per_example (the default since 2026-12-07) beside the exact softmax
#   pycode-default-base  the default (faiss, auto) beside the hand-written baseline (K = 1,024)
#   pycode-shared64   faiss with one shared T of 64 (the default until 2026-12-07) beside per_example
#   pycode-lsh        lsh: per_example beside a shared T of 64
#   synset-faiss      WordNet synset, faiss: per_example beside a shared T of 64
#   synset-base       WordNet synset: shared T of 1,024 (faiss) beside the baseline K = 1,024
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${2:-bench/results}
S=${SESSION:-cpu-$1-$(date -u +%Y%m%d)}  # one name per pair: records never overwrite
B=${BUDGET:-240}  # seconds of training per run; EVAL_AT: budgets evaluated
common=(--epochs 1 --time-limit "$B" --eval-at "${EVAL_AT:-30,60,120,180,240}" --evals-per-epoch 1
  --threads 1 --no-progress --out "$OUT" --session "$S")
pycode() { python3 -m bench.accuracy --task pycode --eval-examples 2048 "${common[@]}" "$@"; }
synset() { python3 -m bench.accuracy --task wordnet-synset --eval-examples 4096 "${common[@]}" --epochs 12 "$@"; }
case "$1" in
  pycode-faiss)
    pycode --methods faiss --candidate-scheme per_example &
    pycode --methods faiss --candidate-scheme shared_samples --num-uniform 1024 ;;
  pycode-base)
    pycode --methods shared_neg --shared-negatives 1024 &
    pycode --methods full ;;
  pycode-full)
    pycode --methods faiss --candidate-scheme auto &
    pycode --methods full ;;
  pycode-default-base)
    pycode --methods faiss --candidate-scheme auto &
    pycode --methods shared_neg --shared-negatives 1024 ;;
  pycode-shared64)
    pycode --methods faiss --candidate-scheme shared_samples &
    pycode --methods faiss --candidate-scheme per_example ;;
  pycode-lsh)
    pycode --methods lsh --candidate-scheme per_example &
    pycode --methods lsh --candidate-scheme shared_samples ;;
  synset-faiss)
    synset --methods faiss --candidate-scheme per_example &
    synset --methods faiss --candidate-scheme shared_samples ;;
  synset-base)
    synset --methods faiss --candidate-scheme shared_samples --num-uniform 1024 &
    synset --methods shared_neg --shared-negatives 1024 ;;
  *) echo "unknown pair $1" >&2; exit 2 ;;
esac
wait
