#!/usr/bin/env bash
# Create .venv with everything failfade needs (idempotent; a second run takes seconds).
# Python 3.11. torch/torchvision are pinned to the releases this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
# failfade needs Python 3.11 (pyproject's requires-python; the pinned torch wheels are 3.11's):
# say so now, not after a multi-GB torch download (for the interpreter and for an existing .venv)
is311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; }
if ! is311 "$PY"; then
  echo "install.sh: $PY is not Python 3.11 ($("$PY" --version 2>&1 | head -1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ -x .venv/bin/python ] && ! is311 .venv/bin/python; then
  echo "install.sh: .venv holds $(.venv/bin/python --version 2>&1), not Python 3.11: remove .venv and run again" >&2
  exit 1
fi
# pip warns about find-links folders this machine's pip config names but does not have; hide that noise only
pip() { .venv/bin/pip "$@" 2> >(grep -v "is neither a file nor a directory" >&2); }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip install -q --upgrade pip
pip install -q "torch==2.14.1" "torchvision==0.29.1"
# every other package at the version the tests last passed with (scripts/constraints.txt, from
# `pip freeze --exclude-editable` of a passing environment): an unpinned release (transformers 5.25
# turning on Hub kernels) once broke a test between two CI runs of the same commit
pip install -q -c scripts/constraints.txt -e ".[dev,bench]"
# pufferlib 2.0.2's metadata pins numpy==1.23.3 (and old opencv/psutil); its native PufferEnv,
# spaces and vector modules work with numpy 2.x, so it goes in without those stale pins.
pip install -q --no-deps "pufferlib==2.0.2"
.venv/bin/python -c "import failfade.puffer, torch; print('failfade environment ready: torch', torch.__version__)"
