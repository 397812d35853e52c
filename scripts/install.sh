#!/usr/bin/env bash
# Create .venv with everything failfade needs (idempotent; a second run takes seconds).
# Python 3.11. torch/torchvision are pinned to the releases this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/pip install -q -e ".[dev]"
# pufferlib 2.0.2's metadata pins numpy==1.23.3 (and old opencv/psutil); its native PufferEnv,
# spaces and vector modules work with numpy 2.x, so it goes in without those stale pins.
.venv/bin/pip install -q --no-deps "pufferlib==2.0.2"
.venv/bin/python -c "import failfade.puffer, torch; print('failfade environment ready: torch', torch.__version__)"
