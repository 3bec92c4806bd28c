#!/usr/bin/env bash
# The main job with embedded defaults: audit the bundled SmolLM2-135M-Instruct on the shipped
# calibration sets. Extra arguments go to `ssah audit` (e.g. --samples 128 --method wanda).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1
exec ssah audit --model builtin:smollm2 --samples 32 --out runs/smollm2-audit "$@"
