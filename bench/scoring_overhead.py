"""Scoring cost vs the model's ordinary forward pass, on SmolLM2-135M-Instruct.

Both run in one process over the same token sequences (the chat-formatted safety and utility
calibration pairs, in the same length-sorted batches), alternating, so machine noise hits
both alike:
  forward  = ``model(input_ids, attention_mask)`` with logits, under inference_mode
  scoring  = ``score_dataset`` (WIFV) on the safety set, then on the utility set
Peak memory is the process's peak resident set (VmHWM, reset before each phase) on CPU, or
the CUDA allocator's peak on GPU. The last line is ``ratio=<scoring time / forward time>``.

    python bench/scoring_overhead.py [--samples 128] [--rounds 3] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common.peak_memory import PeakMemory  # bench/ is on sys.path when a bench runs

from ssah_engine.architectures import describe
from ssah_engine.data import load_dataset
from ssah_engine.encoding import encode_pairs, make_batches
from ssah_engine.loading import LoadedModel, LoadOptions, load_model, pick_device_and_dtype
from ssah_engine.scoring import score_dataset


def random_weights(directory: str) -> LoadedModel:
    """A model of the directory's architecture with random weights (timing only)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    device, dtype = pick_device_and_dtype(LoadOptions())
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(directory), dtype=dtype).to(device).eval()
    return LoadedModel(model, AutoTokenizer.from_pretrained(directory), directory, directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2")
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="--model is a directory with config + tokenizer only: same shapes, random weights",
    )
    args = parser.parse_args()

    loaded = random_weights(args.model) if args.random_weights else load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    layout = describe(model)
    sets = {}
    for name in ("safety", "utility"):
        data = load_dataset(f"builtin:{name}", limit=args.samples, require_response=True)
        encoded = encode_pairs(tokenizer, [(e.prompt, e.response) for e in data.examples])
        sets[name] = list(make_batches(encoded, args.batch_size, tokenizer.pad_token_id))
    tokens = sum(int(b.attention_mask.sum()) for batches in sets.values() for b in batches)
    print(
        f"device={loaded.device} threads={torch.get_num_threads()} samples={args.samples} per set, "
        f"{tokens} tokens, batch_size={args.batch_size}"
    )

    def forward() -> None:
        with torch.inference_mode():
            for batches in sets.values():
                for batch in batches:
                    batch = batch.to(loaded.device)
                    model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

    def scoring() -> None:
        for batches in sets.values():
            score_dataset(model, layout, batches, method="wifv")

    memory = PeakMemory(loaded.device)
    times = {"forward": [], "scoring": []}
    peaks = {"forward": 0.0, "scoring": 0.0}
    forward()  # warm-up: first-call allocations and kernel selection
    scoring()
    for _ in range(args.rounds):
        for name, phase in (("forward", forward), ("scoring", scoring)):
            memory.reset()
            started = time.perf_counter()
            phase()
            if loaded.device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
            peaks[name] = max(peaks[name], memory.read_mib())

    forward_s, scoring_s = statistics.median(times["forward"]), statistics.median(times["scoring"])
    print(f"forward_s={forward_s:.3f} scoring_s={scoring_s:.3f} (median of {args.rounds} alternating rounds)")
    print(
        f"forward_peak_mib={peaks['forward']:.0f} scoring_peak_mib={peaks['scoring']:.0f} "
        f"memory_ratio={peaks['scoring'] / peaks['forward']:.3f}"
    )
    print(f"ratio={scoring_s / forward_s:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
