"""Cost of masked fine-tuning vs plain fine-tuning, per AdamW step, on SmolLM2-135M-Instruct.

Both phases train the same model on the same batch (the first pairs of builtin:benign_sft),
alternating round by round so machine noise hits both alike:
  unmasked = forward + backward + clip + AdamW step, every tensor trainable
  masked   = the same, with freeze setting (i) masks: frozen gradients zeroed before clipping
             and frozen rows/columns written back after the step (FrozenSlices)
The unit map comes from a quick audit (WIFV, --audit-samples pairs of builtin:safety and
builtin:utility, paper cuts), not random labels. Each round builds a fresh AdamW (weight decay
0.1), takes one untimed warm-up step (it allocates the optimizer state), then times --steps
steps. Peak memory: VmHWM (reset per phase) on CPU, the allocator's peak on CUDA. The last
line is ``ratio=<masked step time / unmasked step time>`` (medians).

    python bench/masked_sft_overhead.py [--rounds 3] [--steps 2] [--batch-size 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common.peak_memory import PeakMemory  # bench/ is on sys.path when a bench runs

from ssah_engine.architectures import describe
from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.data import load_dataset
from ssah_engine.finetune import FinetuneConfig, FrozenSlices, build_masks, frozen_units_for, make_optimizer
from ssah_engine.finetune.batches import StepBatches
from ssah_engine.finetune.trainer import train_step
from ssah_engine.loading import LoadOptions, load_model
from ssah_engine.units import UnitSpace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:smollm2")
    parser.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--audit-samples", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per phase and round")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(args.model, LoadOptions(device=args.device, dtype="float32"))
    model, device = loaded.model, loaded.device
    audit = AuditConfig(samples=args.audit_samples, max_length=96)
    started = time.perf_counter()
    unit_map = run_audit(loaded, load_dataset("builtin:safety"), load_dataset("builtin:utility"), audit)
    audit_s = time.perf_counter() - started

    config = FinetuneConfig(
        mode="freeze",
        setting="i",
        lr=1e-5,
        weight_decay=0.1,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_steps=1,
    )
    space = UnitSpace.from_layout(describe(model))
    masks = build_masks(model, frozen_units_for(config, space, unit_map))
    summary = masks.summary(model, space)
    sft = load_dataset("builtin:benign_sft", limit=args.batch_size, require_response=True)
    window = StepBatches(loaded.tokenizer, sft, config).window(0)
    tokens = sum(int(batch.attention_mask.sum()) for batch in window)
    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch_size} pairs, {tokens} tokens; "
        f"unit map from a {args.audit_samples}-pair audit ({audit_s:.1f}s); frozen units "
        f"{100 * summary['frozen_unit_fraction']:.2f} %, trainable parameters {100 * summary['trainable_fraction']:.2f} %, "
        f"{summary['partly_frozen_tensors']} partly frozen tensors"
    )

    memory = PeakMemory(device)
    times = {"unmasked": [], "masked": []}
    peaks = {"unmasked": 0.0, "masked": 0.0}
    model.train()
    for _ in range(args.rounds):
        for name in ("unmasked", "masked"):
            memory.reset()
            frozen = None
            if name == "masked":
                masks.apply(model)
                frozen = FrozenSlices(model, masks)
            optimizer = make_optimizer(model, config)
            train_step(model, optimizer, window, frozen, config)  # warm-up: allocates the AdamW state
            for _ in range(args.steps):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                step_started = time.perf_counter()
                train_step(model, optimizer, window, frozen, config)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - step_started)
            peaks[name] = max(peaks[name], memory.read_mib())
            print(
                f"round {len(times[name]) // args.steps} {name}: "
                + " ".join(f"{t:.3f}" for t in times[name][-args.steps :]),
                flush=True,
            )
            for parameter in model.parameters():
                parameter.requires_grad_(True)
            del optimizer, frozen
            model.zero_grad(set_to_none=True)

    # The masking work alone (zero frozen gradients + write frozen slices back), isolated from step noise.
    masks.apply(model)
    frozen = FrozenSlices(model, masks)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter) if parameter.requires_grad else None
    if device.type == "cuda":
        torch.cuda.synchronize()
    ops_started = time.perf_counter()
    for _ in range(10):
        frozen.zero_grads()
        frozen.restore()
    if device.type == "cuda":
        torch.cuda.synchronize()
    mask_ops_s = (time.perf_counter() - ops_started) / 10

    unmasked_s, masked_s = statistics.median(times["unmasked"]), statistics.median(times["masked"])
    print(
        f"unmasked_step_s={unmasked_s:.4f} masked_step_s={masked_s:.4f} "
        f"(median of {args.rounds} alternating rounds x {args.steps} steps); mask_ops_s={mask_ops_s:.4f} "
        f"({100 * mask_ops_s / unmasked_s:.2f} % of a step)"
    )
    print(
        f"unmasked_peak_mib={peaks['unmasked']:.0f} masked_peak_mib={peaks['masked']:.0f} "
        f"memory_ratio={peaks['masked'] / peaks['unmasked']:.3f}"
    )
    print(f"ratio={masked_s / unmasked_s:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
