#!/usr/bin/env bash
# The GPU pass as ONE device call that fits a 10-minute limit: versions, the CUDA-marked
# tests, the kernel and fused-CE benchmarks, the sweep (every path, peers, the shared-negative
# baseline, recall beside speed), the step profile (stages, whole steps against the baseline,
# SparseAdam against FusedSparseAdam, exact_topk) and the tune command; every log and record
# lands in $OUT (brought back by the device tool). Prepare on the CPU machine:
# `bash scripts/fetch_gpu_wheels.sh`, then call the device tool with command
# `bash scripts/gpu_pass.sh` and carry [".whl"].
#
# SIZE=smoke runs every stage at small sizes with short limits (does it all run on this GPU
# and this Triton? 5.5 minutes before its last stage was cut on 2026-11-30); SIZE=full
# (default) at the sizes the README reports. Budget one call, timeout_s 600, for either.
# Each stage has its own time limit so one slow stage cannot eat the others; STAGES picks a
# subset. Stages run in order of what matters most if the call is cut short.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_pass}
SIZE=${SIZE:-full}
RES=/tmp/gpu_pass_work  # everything is written here, then packed into $OUT (8 files max)
rm -rf "$RES"
mkdir -p "$OUT" "$RES"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl 2>&1 | tail -3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# `exact` (the exact path: chunked vs fused vs the peers, 4 minutes at most) runs early: on a
# full pass the last stages may then be cut by the call's limit; STAGES="env exact" alone fits
STAGES=${STAGES:-"env tests exact probe kernels step_profile sweep linear_ce bucket_tiles tune"}
stage() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
T0=$(date +%s)
# after every stage: the timeline, and everything so far packed into $OUT, so a call cut
# short by its limit still brings back what it finished
mark() {
  echo "[gpu_pass] $1 done at +$(( $(date +%s) - T0 )) s" | tee -a "$RES/timeline.txt"
  tar czf "$OUT/gpu_pass.tgz" -C "$RES" .
}

SWEEP_FAISS=""  # faiss-cpu on GPU tensors copies the weight to the host: smoke only
if [ "$SIZE" = smoke ]; then
  SWEEP_FAISS="faiss"
  T_TESTS=170; T_BENCH=45
  KERNELS_ARGS=(--n 100000 --C 256 1024 --N 4096)
  STEP_ARGS=(--n 1e5 --N 1024 --d 128 --S 64 --T 64 --K 1024 --repeats 5 --topk-n 1e5)
  SWEEP_ARGS=(--n 1e4 1e5 --d 256 --N 1024 --dtype bf16 --repeats 5)
  LCE_ARGS=(--N 4096 --d 1024 --n 32768 131072)
  TILE_ARGS=(--n 1e5 --N 1024)
  EXACT_ARGS=(--N 4096 --d 1024 --n 32768 131072)
else  # at most about 9.5 minutes (stage limits; most stages end sooner): timeout_s 600
  T_TESTS=120; T_BENCH=55
  KERNELS_ARGS=(--n 1000000 --C 256 --N 8192)
  STEP_ARGS=(--n 1e6 --N 4096 --d 256 --S 512 --T 512 --K 1024 4096 --repeats 10
             --topk-n 1e6 --topk-N 4096)
  SWEEP_ARGS=(--n 1e5 1e6 1e7 --d 512 --N 4096 --dtype bf16)
  LCE_ARGS=(--N 8192 --d 1024 --n 131072 1000000 --impl ours plain cce liger)
  TILE_ARGS=(--n 1e6 --N 8192)
  EXACT_ARGS=(--N 8192 --d 1024 --n 131072 262144)
fi
TESTS_K=${TESTS_K:-}  # a pytest -k expression: rerun only some CUDA tests

if stage env; then
  { nvidia-smi; python3 -c "import torch, triton, sys; print(sys.version); print('torch', \
torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(), \
torch.cuda.get_device_capability())"; python3 -c "import faiss; print('faiss', faiss.__version__)"
  } > "$RES/env.txt" 2>&1
  mark env
fi
if stage tests; then  # CUDA-marked tests: every kernel against its twin, the module on CUDA
  par=(); python3 -c "import xdist" 2>/dev/null && par=(-n 6)  # pytest-xdist where present
  sel=(); [ -n "$TESTS_K" ] && sel=(-k "$TESTS_K")
  timeout "$T_TESTS" python3 -m pytest -q -m cuda "${par[@]}" "${sel[@]}" -p no:cacheprovider \
    tests/ > "$RES/tests_cuda.log" 2>&1
  echo "tests rc=$?" >> "$RES/tests_cuda.log"
  mark tests
fi
if stage exact; then  # the exact path on CUDA: <= 4 minutes (45 + 135 + 60 s limits)
  # 1) the chunked kernels' CUDA tests (float64 oracle, bitwise reruns, default route)
  timeout 45 python3 -m pytest -q -m cuda -p no:cacheprovider \
    tests/test_kernels_linear_ce_chunked.py > "$RES/exact_tests.log" 2>&1
  echo "rc=$?" >> "$RES/exact_tests.log"
  # 2) bf16 forward and backward timed apart, peak memory: ours (chunked, the default) /
  #    plain / Cut CE / Liger (skipped when absent) / the fused kernels last (longest compile)
  TRITON_PRINT_AUTOTUNING=1 timeout 135 python3 bench/linear_ce_cuda.py "${EXACT_ARGS[@]}" \
    --dtype bf16 --impl ours plain cce liger ours-fused --phases --warmup-ms 10 --rep-ms 100 \
    --out "$RES/exact_linear_ce_cuda.json" > "$RES/exact_linear_ce_cuda.log" 2>&1
  echo "rc=$?" >> "$RES/exact_linear_ce_cuda.log"
  # 3) the README's quick sweep (N = 256, d = 128, fp32, n = 1e3..1e6) on CUDA, exact methods
  timeout 60 python3 -m bench.sweep --quick --device cuda \
    --methods full torch torch_compile cce liger --out-dir "$RES" --tag exact-quick \
    --no-plot --no-progress > "$RES/exact_quick_sweep.log" 2>&1
  echo "rc=$?" >> "$RES/exact_quick_sweep.log"
  mark exact
fi
if stage probe; then  # the H200 run's list_topk fault (2026-11-30): tl.sort of int64 keys, per num_warps
  timeout 60 python3 scripts/gpu_probe_sort.py --out "$RES/probe_sort.json" \
    > "$RES/probe_sort.log" 2>&1
  echo "rc=$?" >> "$RES/probe_sort.log"
  mark probe
fi
if stage kernels; then
  timeout "$T_BENCH" python3 bench/kernels_cuda.py "${KERNELS_ARGS[@]}" \
    --out "$RES/kernels_cuda.json" > "$RES/kernels_cuda.log" 2>&1
  echo "rc=$?" >> "$RES/kernels_cuda.log"
  mark kernels
fi
if stage step_profile; then  # on the GPU: stages, steps vs the baseline, optimizers
  timeout $(( T_BENCH * 3 / 2 )) python3 -m bench.step_profile --device cuda "${STEP_ARGS[@]}" \
    --out "$RES/step_profile_cuda.json" > "$RES/step_profile.log" 2>&1
  echo "rc=$?" >> "$RES/step_profile.log"
  mark step_profile
fi
if stage sweep; then
  timeout $(( T_BENCH * 2 )) python3 -m bench.sweep --device cuda "${SWEEP_ARGS[@]}" \
    --methods full lsh lsh_shared uniform uniform_shared torch cce liger \
    shared_neg1024 shared_neg_matched $SWEEP_FAISS --out-dir "$RES" --tag gpu --no-plot --no-progress \
    > "$RES/sweep.log" 2>&1
  echo "rc=$?" >> "$RES/sweep.log"
  mark sweep
fi
if stage linear_ce; then
  TRITON_PRINT_AUTOTUNING=1 timeout "$T_BENCH" python3 bench/linear_ce_cuda.py "${LCE_ARGS[@]}" \
    --out "$RES/linear_ce_cuda.json" > "$RES/linear_ce_cuda.log" 2>&1
  echo "rc=$?" >> "$RES/linear_ce_cuda.log"
  mark linear_ce
fi
if stage bucket_tiles; then  # tiles vs per-example gathers, bf16, d = 512
  timeout 45 python3 -m bench.bucket_tiles --device cuda --dtype bf16 --d 512 \
    "${TILE_ARGS[@]}" --S 1024 --T 1024 --out "$RES" > "$RES/bucket_tiles.log" 2>&1
  echo "rc=$?" >> "$RES/bucket_tiles.log"
  mark bucket_tiles
fi
if stage search_vs_faiss; then  # not in the default STAGES (STAGES=search_vs_faiss): the CPU
  # step profile's configuration on the GPU, lsh (list tiles on the device) against faiss (ivfpq
  # on the host, faiss-cpu), each index's search alone beside the steps
  timeout 120 python3 -m bench.step_profile --device cuda --n 1e6 --N 256 --d 128 --S 64 \
    --T 1024 --K 1024 4096 --methods lsh faiss uniform --union-S --skip-stages --topk-n 0 \
    --repeats 9 --out "$RES/step_profile_vs_faiss_cuda.json" > "$RES/step_profile_vs_faiss.log" 2>&1
  echo "rc=$?" >> "$RES/step_profile_vs_faiss.log"
  mark search_vs_faiss
fi
if stage search; then  # not in the default STAGES (its own call, <= 4 minutes: STAGES="env
  # search"): the clusters search on tensor cores (kernels/list_tiles.py) against its twin and
  # the previous bmm route, by stage; the SimHash tables' candidates ranked by collision count
  # and by exact logit (the same list-tile kernel over the (table, bucket) ranges) with their
  # recall of the exact top-10; then the sweep at n = 1e6 and 1e7 (lsh, faiss, full,
  # plain, Cut CE, the uniform shared path, the hand-written baseline; recall of the exact
  # top-10 beside each sampled row) and the lsh step profile by stage. Limits sum to 240 s.
  timeout 40 python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_list_tiles.py \
    tests/test_lsh_scored.py > "$RES/search_tests.log" 2>&1
  echo "rc=$?" >> "$RES/search_tests.log"
  timeout 50 python3 -m bench.search_tiles --device cuda --n 1e6 1e7 --N 4096 --d 512 \
    --dtype bf16 --S 512 --repeats 10 --out "$RES/search_tiles_cuda.json" \
    > "$RES/search_tiles.log" 2>&1
  echo "rc=$?" >> "$RES/search_tiles.log"
  mark search_tiles
  timeout 25 python3 -m bench.tables_rank --device cuda --n 1e6 --N 4096 --d 512 \
    --dtype bf16 --S 512 --repeats 5 --out "$RES/tables_rank_cuda.json" \
    > "$RES/tables_rank.log" 2>&1
  echo "rc=$?" >> "$RES/tables_rank.log"
  mark tables_rank
  # faiss-cpu on CUDA tensors copies the weight to the host: at 1e6 only
  timeout 50 python3 -m bench.sweep --device cuda --n 1e6 --d 512 --N 4096 --dtype bf16 \
    --methods lsh faiss full torch cce uniform_shared shared_neg1024 --no-roofline \
    --out-dir "$RES" --tag gpu-search-1e6 --no-plot --no-progress > "$RES/sweep_search_1e6.log" 2>&1
  echo "rc=$?" >> "$RES/sweep_search_1e6.log"
  mark sweep_search_1e6
  timeout 50 python3 -m bench.sweep --device cuda --n 1e7 --d 512 --N 4096 --dtype bf16 \
    --methods lsh full torch cce uniform_shared shared_neg1024 --no-roofline \
    --out-dir "$RES" --tag gpu-search-1e7 --no-plot --no-progress > "$RES/sweep_search_1e7.log" 2>&1
  echo "rc=$?" >> "$RES/sweep_search_1e7.log"
  mark sweep_search_1e7
  timeout 25 python3 -m bench.step_profile --device cuda --n 1e6 --N 4096 --d 512 --S 512 \
    --T 512 --K 1024 --methods lsh uniform --repeats 5 --topk-n 0 \
    --out "$RES/step_profile_search_cuda.json" > "$RES/step_profile_search.log" 2>&1
  echo "rc=$?" >> "$RES/step_profile_search.log"
  mark step_profile_search
fi
if stage tune; then
  XDG_CACHE_HOME="$RES/cache" timeout 45 python3 -m triton_softmax.tune --repeats 3 \
    > "$RES/tune.log" 2>&1
  echo "rc=$?" >> "$RES/tune.log"
  mark tune
fi
tar czf "$OUT/gpu_pass.tgz" -C "$RES" .
tail -n 25 "$RES"/*.log "$RES/timeline.txt" > "$OUT/summary.txt" 2>&1
cp "$RES/tests_cuda.log" "$OUT/" 2>/dev/null
ls -la "$OUT"
