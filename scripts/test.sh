#!/usr/bin/env bash
# The test command: installs everything, starts the services, runs the fast suite, then the slow one
# (real SmolLM2 model, real worker processes) as a separate step.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
# The dashboard's browser tests drive Debian's chromium (no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  echo "test: installing chromium"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

echo "== lint, format and type checks"
python -m ruff check .
python -m ruff format --check .
python -m mypy

echo "== fast tests"
python -m pytest -m "not slow and not gpu" -q --timeout 600 "$@"
if [ "${SSAH_SKIP_SLOW:-0}" != "1" ]; then
  bash scripts/setup.sh --aligned-model  # builtin:qwen2.5-coder-0.5b, for the slow step only
  echo "== slow tests (real model, real processes)"
  python -m pytest -m "slow and not gpu" -q --timeout 1200 "$@"
  bash scripts/test_floor.sh  # the engine at the oldest transformers pyproject.toml allows
fi
