#!/usr/bin/env bash
# GPU check of the reconstruction model, on the device machine (one H100/H200), from the repository root:
#
#   here, once:   .venv/bin/python services/reconstruction/gpu/bench_gpu.py --prepare-data .local/gpu-data/mni152.npz
#   device tool:  command "bash services/reconstruction/gpu/run_gpu.sh", carry [".local/gpu-data"], timeout_s 540
#
# The machine has PyTorch (CUDA), numpy, scipy, onnx and onnxruntime and no network: nothing is installed
# from a registry. Wheels carried in .whl/ (e.g. a GPU build of ONNX Runtime) are installed first if present.
set -euo pipefail
OUT="${OUT:-$PWD/.local/gpu-out}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
export PYTHONUNBUFFERED=1
set -o pipefail
timeout 470 python3 services/reconstruction/gpu/bench_gpu.py \
  --data .local/gpu-data/mni152.npz --out "$OUT" --budget-s 420 --train-s 120 "$@" 2>&1 | tee "$OUT/log.txt"
