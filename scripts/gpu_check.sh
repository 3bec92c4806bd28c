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
# Issue 21, part 5: random-weight Llama-2-7B and Llama-3-8B shapes (weights drawn on the GPU from a seed, saved once
# as safetensors for the streamed audit), 128 + 128 pairs of 200 tokens: audit vs plain forward, streamed vs whole,
# masked vs plain AdamW step, batched generation; one key=value line per figure (bench/gpu_check.py).
python3 bench/gpu_check.py --config "${GPU_CHECK_SHAPES:-llama2-7b,llama3-8b}" 2>&1 | grep -v "^Writing\|Loading" | tail -80
