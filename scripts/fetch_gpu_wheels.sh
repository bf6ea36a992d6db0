#!/usr/bin/env bash
# Download, on the CPU machine, the wheels the GPU machine lacks (it has torch 2.11, triton
# 3.6, Python 3.12, pytest with xdist and benchmark, hypothesis, and no network): faiss-cpu
# and the two peers of the benchmark. Its own pytest stays: a newer one carried over it can
# break its plugins. They go to .whl/ (git-ignored via .git/info/exclude); the device tool carries
# them with `carry: [".whl"]` and scripts/gpu_pass.sh installs them into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
for spec in faiss-cpu cut-cross-entropy liger-kernel; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${plat[@]}" -d .whl "$spec" \
    || echo "fetch_gpu_wheels: no wheel for $spec (the GPU pass records it as missing)" >&2
done
du -sh .whl
