#!/usr/bin/env bash
# The GPU pass (issues 10 and 11) as ONE device call that fits a 10-minute limit: versions,
# the CUDA-marked tests, the kernel and fused-CE benchmarks, the sweep with peers and the
# roofline, and the tune command; every log and record lands in $OUT (brought back by the
# device tool). Prepare on the CPU machine: `bash scripts/fetch_gpu_wheels.sh`, then call the
# device tool with command `bash scripts/gpu_pass.sh` and carry [".whl"]. Each stage has its
# own time limit so one slow stage cannot eat the others; STAGES picks a subset.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_pass}
RES=/tmp/gpu_pass_work  # everything is written here, then packed into $OUT (8 files max)
mkdir -p "$OUT" "$RES"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl 2>&1 | tail -3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STAGES=${STAGES:-"env tests kernels linear_ce bucket_tiles sweep tune"}
stage() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if stage env; then
  { nvidia-smi; python3 -c "import torch, triton, sys; print(sys.version); print('torch', \
torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(), \
torch.cuda.get_device_capability())"; } > "$RES/env.txt" 2>&1
fi
if stage tests; then  # CUDA-marked tests and the library on CUDA tensors
  timeout 150 python3 -m pytest -q -m cuda tests/ > "$RES/tests_cuda.log" 2>&1
  echo "tests rc=$?" >> "$RES/tests_cuda.log"
fi
if stage kernels; then
  timeout 120 python3 bench/kernels_cuda.py --out "$RES/kernels_cuda.json" \
    > "$RES/kernels_cuda.log" 2>&1
fi
if stage linear_ce; then
  timeout 120 python3 bench/linear_ce_cuda.py --out "$RES/linear_ce_cuda.json" \
    > "$RES/linear_ce_cuda.log" 2>&1
fi
if stage bucket_tiles; then  # tiles vs per-example gathers (issue 3), bf16, d = 512
  timeout 120 python3 -m bench.bucket_tiles --device cuda --dtype bf16 --d 512 --n 1e5 1e6 \
    --N 1024 8192 --S 1024 --T 1024 --out "$RES" > "$RES/bucket_tiles.log" 2>&1
fi
if stage sweep; then
  timeout 200 python3 -m bench.sweep --device cuda --n 1e4 1e5 1e6 1e7 --d 1024 --N 8192 \
    --dtype bf16 --out-dir "$RES" --no-plot --no-progress > "$RES/sweep.log" 2>&1
fi
if stage tune; then
  XDG_CACHE_HOME="$RES/cache" timeout 60 python3 -m triton_softmax.tune --repeats 3 \
    > "$RES/tune.log" 2>&1
fi
tar czf "$OUT/gpu_pass.tgz" -C "$RES" .
tail -n 40 "$RES"/*.log > "$OUT/summary.txt" 2>&1
ls -la "$OUT"
