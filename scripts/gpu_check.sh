#!/usr/bin/env bash
# Runs on a lent GPU machine (no registry there): the CUDA tests, the engine suite, and the scoring
# bench on a SmolLM2-shaped model with random weights (the GGUF is too big to carry).
set -uo pipefail
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/engine/test_gpu.py 2>&1 | tail -15
python3 -m pytest -q -p no:cacheprovider -m "not slow and not gpu" tests/engine -x 2>&1 | tail -8
python3 bench/scoring_overhead.py --model "${SMOLLM2_SHAPE:-bench/smollm2-shape}" --random-weights --samples 128 --rounds 5 2>&1 | tail -4
