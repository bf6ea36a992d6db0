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
# Four runs side by side, budgets on each run's CPU seconds (--clock cpu: on a machine
# shared by other jobs that is what a dedicated core would give each run), the defaults of
# 2026-12-07 on (auto: a shared T of max(|T|, 1,024) with the search gate at 0.3):
#   synset-4way-a     per-example | hybrid | shared T 1,024 + gate | baseline K = 1,024
#   synset-4way-b     hybrid + gate | per-example + gate | shared T 1,024 + gate | baseline
#   pycode-4way-a     per-example | hybrid | shared T 1,024 | hybrid + gate
#   pycode-4way-b     shared T 1,024 + gate | hybrid |T| = 16 + gate | per-example | exact
#   lemma-4way        WordNet lemma: default faiss | per-example | default lsh | baseline
#   synset-512        |S| = |T| = 512: default faiss | per-example | default lsh | baseline
#   synset-b256       batch 256: default faiss | per-example | default lsh | baseline
#   pycode-480        8 min: default faiss | per-example | exact; synset default lsh, 12 epochs
#   lemma-gate        lemma, the search gate's kept-index rule: default faiss | default lsh |
#                     baseline K = 1,024 | baseline K = 4,096 (its step costs the default's)
#   synset-b256-gate  batch 256 with that rule: default faiss | lsh | per-example | baseline
#   synset-480        8 min (BUDGET=480): default faiss | method="auto" | baseline K = 1,024 | 4,096;
#                     and the default lsh for the recipe's 12 epochs (FINAL names its session)
#   synset-auto       method="auto" gated (the default) | auto without the gate | default faiss |
#                     baseline K = 1,024
#   pycode-480-lsh    8 min (BUDGET=480): default faiss | default lsh | baseline K = 1,024 | exact
#   synset-share      method="auto" (gated) with its target share of the exact top-63 mass at
#                     0.5 | 0.3, beside the default faiss and the baseline K = 1,024
#   lemma-share       the same on WordNet lemma
#   lsh-np32          the default lsh reading 32 lists a query (lsh_nprobe=32, 16 by default):
#                     synset for the recipe's 12 epochs (FINAL names its session) | lemma at
#                     budgets beside lsh at 16 and the default faiss
#   synset-480-auto   8 min (BUDGET=480): method="auto" (the default) | default faiss |
#                     baseline K = 1,024 | 4,096; a run stops after the recipe's 12 epochs
#   pycode-auto       method="auto" (the default method) | default faiss | default lsh | exact
#   pycode-trace      held-out perplexity every 20 steps for 800 steps (bench.heldout_trace):
#                     faiss with the default shared T of 1,024 | per-example T | hybrid | a
#                     shared T of 4,096
#   pycode-head       the same trace: the default (an exact head of the 256 most frequent
#                     targets + 768 draws by frequency) | head 512 + 512 | frequency, no
#                     head | uniform (the default until 2026-12-07)
#   pycode-paths-trace  the same trace for the default faiss, lsh and auto paths and the
#                     exact softmax
#   pycode-refresh-trace  the same trace (600 steps) with the index rebuilt every 50 and 25
#                     steps (faiss, lsh): the sawtooth between refreshes
#   refresh-budgets   faiss with the index rebuilt every 25 steps beside every 100 (the
#                     default), pycode and WordNet synset at CPU-second budgets
#   lsh-refresh-budgets  lsh with its lists rebuilt every 50 steps beside every 100 (the
#                     default), WordNet synset and lemma side by side
#   head-wordnet      method="auto" with its default proposal (head + frequency) | with the
#                     uniform shared T of 1,024, WordNet synset and lemma side by side
#   head-baseline     method="auto" (the default) beside the baseline K = 1,024, synset and
#                     lemma side by side
#   head-final        WordNet synset, the recipe's 12 epochs, the default lsh and faiss
#   t4096             a shared T of 4,096 beside the default's 1,024 (faiss, gated), WordNet
#                     synset and lemma side by side
#   lemma-more        lemma |S| = |T| = 512: default | per-example; batch 256: default | baseline
#                     (run labels do not name |S| or the batch: the batch-256 default
#                     writes to OUT/b256, else one default's record overwrites the other's)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${2:-bench/results}
S=${SESSION:-cpu-$1-$(date -u +%Y%m%d)}  # one name per pair: records never overwrite
B=${BUDGET:-240}  # seconds of training per run; EVAL_AT: budgets evaluated
common=(--epochs 1 --time-limit "$B" --eval-at "${EVAL_AT:-30,60,120,180,240}" --evals-per-epoch 1
  --threads 1 --no-progress --out "$OUT" --session "$S")
pycode() { python3 -m bench.accuracy --task pycode --eval-examples 2048 "${common[@]}" "$@"; }
synset() { python3 -m bench.accuracy --task wordnet-synset --eval-examples 4096 "${common[@]}" --epochs 12 "$@"; }
quad=(--clock cpu --epochs 12)
lemma() { python3 -m bench.accuracy --task wordnet-lemma --eval-examples 4096 "${common[@]}" "${quad[@]}" "$@"; }
auto=(--candidate-scheme auto --search-min-mass auto)
gate=(--search-min-mass 0.3)
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
  synset-4way-a)
    synset "${quad[@]}" --methods faiss --candidate-scheme per_example &
    synset "${quad[@]}" --methods faiss --candidate-scheme hybrid &
    synset "${quad[@]}" --methods faiss --candidate-scheme shared_samples --num-uniform 1024 "${gate[@]}" &
    synset "${quad[@]}" --methods shared_neg --shared-negatives 1024 ;;
  synset-4way-b)
    synset "${quad[@]}" --methods faiss --candidate-scheme hybrid "${gate[@]}" &
    synset "${quad[@]}" --methods faiss --candidate-scheme per_example "${gate[@]}" &
    synset "${quad[@]}" --methods faiss --candidate-scheme shared_samples --num-uniform 1024 "${gate[@]}" &
    synset "${quad[@]}" --methods shared_neg --shared-negatives 1024 ;;
  pycode-4way-a)
    pycode "${quad[@]}" --methods faiss --candidate-scheme per_example &
    pycode "${quad[@]}" --methods faiss --candidate-scheme hybrid &
    pycode "${quad[@]}" --methods faiss --candidate-scheme shared_samples --num-uniform 1024 &
    pycode "${quad[@]}" --methods faiss --candidate-scheme hybrid "${gate[@]}" ;;
  pycode-4way-b)
    pycode "${quad[@]}" --methods faiss --candidate-scheme shared_samples --num-uniform 1024 "${gate[@]}" &
    pycode "${quad[@]}" --methods faiss --candidate-scheme hybrid --num-uniform 16 "${gate[@]}" &
    pycode "${quad[@]}" --methods faiss --candidate-scheme per_example &
    pycode "${quad[@]}" --methods full ;;
  lemma-4way)
    lemma --methods faiss "${auto[@]}" &
    lemma --methods faiss --candidate-scheme per_example &
    lemma --methods lsh "${auto[@]}" &
    lemma --methods shared_neg --shared-negatives 1024 ;;
  synset-512)
    synset "${quad[@]}" --num-candidates 512 --num-uniform 512 --methods faiss "${auto[@]}" &
    synset "${quad[@]}" --num-candidates 512 --num-uniform 512 --methods faiss --candidate-scheme per_example &
    synset "${quad[@]}" --num-candidates 512 --num-uniform 512 --methods lsh "${auto[@]}" &
    synset "${quad[@]}" --methods shared_neg --shared-negatives 1024 ;;
  synset-b256)
    synset "${quad[@]}" --batch-size 256 --methods faiss "${auto[@]}" &
    synset "${quad[@]}" --batch-size 256 --methods faiss --candidate-scheme per_example &
    synset "${quad[@]}" --batch-size 256 --methods lsh "${auto[@]}" &
    synset "${quad[@]}" --batch-size 256 --methods shared_neg --shared-negatives 1024 ;;
  pycode-480)
    pycode "${quad[@]}" --methods faiss "${auto[@]}" &
    pycode "${quad[@]}" --methods faiss --candidate-scheme per_example &
    pycode "${quad[@]}" --methods full &
    python3 -m bench.accuracy --task wordnet-synset --eval-examples 4096 --epochs 12 \
      --evals-per-epoch 1 --threads 1 --no-progress --out "$OUT" --session "${FINAL:-$S-final}" \
      --methods lsh "${auto[@]}" ;;
  lemma-more)
    lemma --num-candidates 512 --num-uniform 512 --methods faiss "${auto[@]}" &
    lemma --num-candidates 512 --num-uniform 512 --methods faiss --candidate-scheme per_example &
    lemma --batch-size 256 --methods faiss "${auto[@]}" --out "$OUT/b256" &
    lemma --batch-size 256 --methods shared_neg --shared-negatives 1024 ;;
  lemma-gate)
    lemma --methods faiss "${auto[@]}" &
    lemma --methods lsh "${auto[@]}" &
    lemma --methods shared_neg --shared-negatives 1024 &
    lemma --methods shared_neg --shared-negatives 4096 ;;
  synset-b256-gate)
    synset "${quad[@]}" --batch-size 256 --methods faiss "${auto[@]}" &
    synset "${quad[@]}" --batch-size 256 --methods lsh "${auto[@]}" &
    synset "${quad[@]}" --batch-size 256 --methods faiss --candidate-scheme per_example &
    synset "${quad[@]}" --batch-size 256 --methods shared_neg --shared-negatives 1024 ;;
  synset-480)
    synset "${quad[@]}" --methods faiss "${auto[@]}" &
    synset "${quad[@]}" --methods auto "${auto[@]}" &
    synset "${quad[@]}" --methods shared_neg --shared-negatives 1024 &
    synset "${quad[@]}" --methods shared_neg --shared-negatives 4096 &
    python3 -m bench.accuracy --task wordnet-synset --eval-examples 4096 --epochs 12 \
      --evals-per-epoch 1 --threads 1 --no-progress --out "$OUT" --session "${FINAL:-$S-final}" \
      --methods lsh "${auto[@]}" ;;
  pycode-480-lsh)
    pycode "${quad[@]}" --methods faiss "${auto[@]}" &
    pycode "${quad[@]}" --methods lsh "${auto[@]}" &
    pycode "${quad[@]}" --methods shared_neg --shared-negatives 1024 &
    pycode "${quad[@]}" --methods full ;;
  synset-auto)
    synset "${quad[@]}" --methods auto "${auto[@]}" &
    synset "${quad[@]}" --methods auto --candidate-scheme auto --search-min-mass off &
    synset "${quad[@]}" --methods faiss "${auto[@]}" &
    synset "${quad[@]}" --methods shared_neg --shared-negatives 1024 ;;
  synset-share)
    synset "${quad[@]}" --methods auto "${auto[@]}" --auto-target-share 0.5 &
    synset "${quad[@]}" --methods auto "${auto[@]}" --auto-target-share 0.3 &
    synset "${quad[@]}" --methods faiss "${auto[@]}" &
    synset "${quad[@]}" --methods shared_neg --shared-negatives 1024 ;;
  lemma-share)
    lemma --methods auto "${auto[@]}" --auto-target-share 0.5 &
    lemma --methods auto "${auto[@]}" --auto-target-share 0.3 &
    lemma --methods faiss "${auto[@]}" &
    lemma --methods shared_neg --shared-negatives 1024 ;;
  synset-480-auto)
    synset "${quad[@]}" --methods auto "${auto[@]}" &
    synset "${quad[@]}" --methods faiss "${auto[@]}" &
    synset "${quad[@]}" --methods shared_neg --shared-negatives 1024 &
    synset "${quad[@]}" --methods shared_neg --shared-negatives 4096 ;;
  pycode-auto)
    pycode "${quad[@]}" --methods auto "${auto[@]}" &
    pycode "${quad[@]}" --methods faiss "${auto[@]}" &
    pycode "${quad[@]}" --methods lsh "${auto[@]}" &
    pycode "${quad[@]}" --methods full ;;
  pycode-trace)
    trace=(python3 -m bench.heldout_trace --task pycode --eval-examples 2048 --epochs 12
      --steps 800 --every 20 --threads 1 --no-progress --out "$OUT" --session "$S"
      --methods faiss "${auto[@]}")
    "${trace[@]}" &
    "${trace[@]}" --candidate-scheme per_example &
    "${trace[@]}" --candidate-scheme hybrid &
    "${trace[@]}" --candidate-scheme shared_samples --num-uniform 4096 ;;
  pycode-head)
    trace=(python3 -m bench.heldout_trace --task pycode --eval-examples 2048 --epochs 12
      --steps 800 --every 20 --threads 1 --no-progress --out "$OUT" --session "$S"
      --methods faiss "${auto[@]}")
    "${trace[@]}" &
    "${trace[@]}" --num-head 512 --num-uniform 512 &
    "${trace[@]}" --sampler frequency &
    "${trace[@]}" --sampler uniform ;;
  pycode-paths-trace)
    trace=(python3 -m bench.heldout_trace --task pycode --eval-examples 2048 --epochs 12
      --steps 800 --every 20 --threads 1 --no-progress --out "$OUT" --session "$S")
    "${trace[@]}" --methods faiss "${auto[@]}" &
    "${trace[@]}" --methods lsh "${auto[@]}" &
    "${trace[@]}" --methods auto "${auto[@]}" &
    "${trace[@]}" --methods full ;;
  pycode-refresh-trace)
    trace=(python3 -m bench.heldout_trace --task pycode --eval-examples 2048 --epochs 12
      --steps 600 --every 20 --threads 1 --no-progress --out "$OUT" --session "$S" "${auto[@]}")
    "${trace[@]}" --methods faiss@50 &
    "${trace[@]}" --methods lsh@50 &
    "${trace[@]}" --methods faiss@25 ;;
  refresh-budgets)
    pycode "${quad[@]}" --methods faiss@25 "${auto[@]}" &
    pycode "${quad[@]}" --methods faiss "${auto[@]}" &
    synset "${quad[@]}" --methods faiss@25 "${auto[@]}" &
    synset "${quad[@]}" --methods faiss "${auto[@]}" ;;
  lsh-refresh-budgets)
    synset "${quad[@]}" --methods lsh@50 "${auto[@]}" &
    synset "${quad[@]}" --methods lsh "${auto[@]}" &
    lemma --methods lsh@50 "${auto[@]}" &
    lemma --methods lsh "${auto[@]}" ;;
  head-wordnet)
    synset "${quad[@]}" --methods auto "${auto[@]}" &
    synset "${quad[@]}" --methods auto "${auto[@]}" --sampler uniform &
    lemma --methods auto "${auto[@]}" &
    lemma --methods auto "${auto[@]}" --sampler uniform ;;
  head-baseline)
    synset "${quad[@]}" --methods auto "${auto[@]}" &
    synset "${quad[@]}" --methods shared_neg --shared-negatives 1024 &
    lemma --methods auto "${auto[@]}" &
    lemma --methods shared_neg --shared-negatives 1024 ;;
  head-final)
    final=(python3 -m bench.accuracy --task wordnet-synset --eval-examples 4096 --epochs 12
      --evals-per-epoch 1 --threads 1 --no-progress --out "$OUT" --session "$S" "${auto[@]}")
    "${final[@]}" --methods lsh &
    "${final[@]}" --methods faiss ;;
  t4096)
    synset "${quad[@]}" --methods faiss "${auto[@]}" &
    synset "${quad[@]}" --methods faiss "${auto[@]}" --candidate-scheme shared_samples --num-uniform 4096 &
    lemma --methods faiss "${auto[@]}" &
    lemma --methods faiss "${auto[@]}" --candidate-scheme shared_samples --num-uniform 4096 ;;
  lsh-np32)
    python3 -m bench.accuracy --task wordnet-synset --eval-examples 4096 --epochs 12 \
      --evals-per-epoch 1 --threads 1 --no-progress --out "$OUT" --session "${FINAL:-$S-final}" \
      --methods lsh "${auto[@]}" --lsh-nprobe 32 &
    lemma --methods lsh "${auto[@]}" --lsh-nprobe 32 &
    lemma --methods lsh "${auto[@]}" &
    lemma --methods faiss "${auto[@]}" ;;
  *) echo "unknown pair $1" >&2; exit 2 ;;
esac
wait
