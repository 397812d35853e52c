#!/usr/bin/env bash
# Run inside the activated env after it is created (Snakemake does this itself with --sdm conda).
# pufferlib 2.0.2 pins numpy==1.23.3 in its metadata; it works with numpy 2.x, so skip its pins.
set -euo pipefail
pip install --no-deps "pufferlib==2.0.2"
# failfade itself, from the checkout this env serves
if [ -f "$(dirname "$0")/pyproject.toml" ]; then pip install --no-deps -e "$(dirname "$0")"; fi
