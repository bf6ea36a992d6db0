#!/usr/bin/env bash
# Install triton_softmax and everything its tests and benchmarks need, on a fresh machine.
#
# torch: an installed torch is kept (a GPU machine keeps its CUDA build). Where none is
# installed, the CPU build torch==2.13.0 is installed first; an unpinned `pip install torch`
# would pull a multi-GB CUDA build onto a machine with no GPU. Override with TORCH_SPEC.
# WordNet (the real-data accuracy task) comes from Debian's wordnet-base when apt is usable.
set -euo pipefail
PY=${PYTHON:-python3}
cd "$(dirname "$0")/.."

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install "${TORCH_SPEC:-torch==2.13.0}"
fi
"$PY" -m pip install -e ".[dev]"

if [ ! -f /usr/share/wordnet/data.noun ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base) \
    || echo "install.sh: could not install wordnet-base; the WordNet accuracy task will say so" >&2
fi
"$PY" -c "import torch, triton_softmax; print('triton_softmax', triton_softmax.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
