#!/usr/bin/env bash
# GPU throughput: ResNet-50 at 224 px (random weights) and the default digits CNN, failfade's
# exploration against pure batched inference and the paper-style one-image-per-step loop, on the
# same GPU in one process per precision. bf16 autocast first (with its decision disagreement
# against fp32 on the same queries), then fp32; then the text-to-image default (fp16 pipeline, one
# pipeline call per step). Writes the throughput-cuda-* sections of benchmarks/RESULTS.md. About 6
# minutes on one H100/H200.
#
#   bash benchmarks/gpu.sh            # .venv/bin/python, or PYTHON=...; extra args go to throughput.py
set -euo pipefail
cd "$(dirname "$0")/.."
# the project's venv (scripts/install.sh) unless PYTHON says otherwise
if [[ -z "${PYTHON:-}" && -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.cuda.get_device_name(), "torch", torch.__version__)'
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
THREADS=${THREADS:-$(( $(nproc) < 8 ? $(nproc) : 8 ))}
EXTRA=("$@")
for run in "bf16 1024" "bf16 4096" "fp32 1024"; do
  read -r precision agents <<<"$run"
  "$PY" benchmarks/throughput.py --device cuda --models resnet50,digits --precision "$precision" \
    --num-agents "$agents" --repeats 3 --threads "$THREADS" "${EXTRA[@]}"
done
"$PY" benchmarks/throughput.py --device cuda --models t2i --threads "$THREADS" "${EXTRA[@]}"
