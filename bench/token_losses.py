"""Perplexity with the LM head on scored positions only (ssah_engine/token_losses.py) against full logits.

The same perplexity() call on the same paragraphs, once through the plain path (``model(...).logits``
for every position, then cross-entropy) and once through the split path (decoder once, LM head in
chunks of scored rows), in alternating rounds; both must give the same perplexity. Prints

    token_losses_time_ratio = split_s / full_s        (target < 1)
    token_losses_peak_ratio = split_peak / full_peak  (CPU: process peak RSS growth; CUDA: allocator peak)

    python bench/token_losses.py [--model builtin:smollm2] [--paragraphs 20] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from common.peak_memory import PeakMemory

from ssah_engine import token_losses
from ssah_engine.data import load_dataset
from ssah_engine.evaluation.perplexity import perplexity
from ssah_engine.loading import LoadOptions, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2")
    parser.add_argument("--device", default=None)
    parser.add_argument("--paragraphs", type=int, default=20, help="paragraphs of builtin:benign_text")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    loaded = load_model(args.model, LoadOptions(device=args.device, dtype="float32"))
    texts = [example.prompt for example in load_dataset("builtin:benign_text", limit=args.paragraphs).examples]
    memory = PeakMemory(loaded.device)
    split_path = token_losses._head_only_logits

    def run(split: bool) -> tuple[float, float, float]:
        token_losses._head_only_logits = split_path if split else (lambda model: False)
        memory.reset()
        before = memory.read_mib()
        started = time.perf_counter()
        result = perplexity(loaded.model, loaded.tokenizer, texts, batch_size=args.batch_size)
        elapsed = time.perf_counter() - started
        return elapsed, memory.read_mib() - before, result.perplexity

    run(True)  # warm-up
    times = {True: [], False: []}
    peaks = {True: [], False: []}
    values = {}
    for round_ in range(args.rounds):
        for split in (False, True):
            elapsed, peak, value = run(split)
            times[split].append(elapsed)
            peaks[split].append(peak)
            values[split] = value
        print(f"round {round_ + 1}: full {times[False][-1]:.2f}s split {times[True][-1]:.2f}s", flush=True)
    token_losses._head_only_logits = split_path
    print(
        f"model={args.model} vocab={loaded.model.config.vocab_size} perplexity full={values[False]:.4f} "
        f"split={values[True]:.4f}"
    )
    full_s, split_s = statistics.median(times[False]), statistics.median(times[True])
    full_mib, split_mib = max(peaks[False]), max(peaks[True])
    print(f"full_s={full_s:.3f} split_s={split_s:.3f} full_peak_mib={full_mib:.0f} split_peak_mib={split_mib:.0f}")
    print(f"token_losses_time_ratio={split_s / full_s:.3f} ratio={split_s / full_s:.3f}")
    print(f"token_losses_peak_ratio={split_mib / max(full_mib, 1.0):.3f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
