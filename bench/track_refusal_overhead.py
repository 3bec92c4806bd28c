"""Cost of --track-refusal: refusal margins every N steps, against the training steps they ride on.

One training step (forward + backward + clip + AdamW, batch of builtin:benign_sft pairs) and one
tracker measurement (the refusal margin on --track-prompts harmful calibration prompts and as
many harmless ones: two short cached passes per batch of prompts, no generation) are timed in
alternating rounds on the same model. A run measures once every --track-every steps, so

    track_refusal_overhead = (track_every * step_s + measure_s) / (track_every * step_s)

from the medians. Target <= 1.10 at the defaults (every 10 steps, 8 + 8 prompts).

    python bench/track_refusal_overhead.py [--model builtin:smollm2] [--batch-size 4] [--track-every 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from ssah_engine.data import load_dataset
from ssah_engine.finetune import FinetuneConfig, RefusalTracker, make_optimizer
from ssah_engine.finetune.batches import StepBatches
from ssah_engine.finetune.trainer import train_step
from ssah_engine.loading import LoadOptions, load_model


def timed(device, work) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2")
    parser.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--track-every", type=int, default=10)
    parser.add_argument("--track-prompts", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(args.model, LoadOptions(device=args.device, dtype="float32"))
    model, device = loaded.model, loaded.device
    config = FinetuneConfig(
        lr=1e-5,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_steps=1,
        track_refusal=True,
        track_every=args.track_every,
        track_prompts=args.track_prompts,
    )
    sft = load_dataset("builtin:benign_sft", limit=args.batch_size, require_response=True)
    window = StepBatches(loaded.tokenizer, sft, config).window(0)
    tracker = RefusalTracker(
        loaded.tokenizer, load_dataset(config.track_harmful), load_dataset(config.track_harmless), config
    )
    tokens = sum(int(batch.attention_mask.sum()) for batch in window)
    prompt_tokens = sum(len(row) for _, ids in tracker.sets.values() for row in ids)
    print(
        f"device={device} threads={torch.get_num_threads()} step: {args.batch_size} pairs, {tokens} tokens; "
        f"measure: {2 * args.track_prompts} prompts, {prompt_tokens} tokens, {len(tracker.candidates)} openings"
    )

    optimizer = make_optimizer(model, config)
    model.train()
    train_step(model, optimizer, window, None, config)  # warm-up: allocates the AdamW state
    tracker.measure(model)
    steps, measures = [], []
    for round_ in range(args.rounds):
        steps.append(timed(device, lambda: train_step(model, optimizer, window, None, config)))
        measures.append(timed(device, lambda: tracker.measure(model)))
        print(f"round {round_ + 1}: step {steps[-1]:.3f}s measure {measures[-1]:.3f}s", flush=True)
    step_s, measure_s = statistics.median(steps), statistics.median(measures)
    print(
        f"step_s={step_s:.4f} measure_s={measure_s:.4f} track_every={args.track_every} "
        f"(medians of {args.rounds} alternating rounds)"
    )
    ratio = (args.track_every * step_s + measure_s) / (args.track_every * step_s)
    print(f"track_refusal_overhead={ratio:.3f} ratio={ratio:.3f}")  # training with tracking / without (target <= 1.10)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
