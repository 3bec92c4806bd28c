"""Cost of masked fine-tuning vs plain fine-tuning, per AdamW step, on SmolLM2-135M-Instruct.

All phases train the same model on the same batch (the first pairs of builtin:benign_sft),
alternating round by round so machine noise hits them alike:
  unmasked     = forward + backward + clip + torch AdamW step, every tensor trainable
  masked       = the same with freeze --setting masks (default ii) and the default PackedAdamW:
                 frozen gradients zeroed before clipping, moments only for trainable rows/columns
  masked_dense = the old path (packed_optimizer=False): dense moments, frozen slices written back
The unit map comes from a quick audit (WIFV, --audit-samples pairs of builtin:safety and
builtin:utility, paper cuts), not random labels. Each round builds a fresh optimizer (weight decay
0.1), takes one untimed warm-up step (it allocates the optimizer state), then times --steps
steps. Peak memory: VmHWM (reset per phase) on CPU, the allocator's peak on CUDA.

It prints ``optimizer_state_ratio=`` (optimizer-state bytes / trainable-parameter bytes; two
float32 moments are 2.0) for the setting and for budget mode (RU of the same map trains,
embeddings, norms and LM head frozen), for the packed and the dense path; the optimizer step
alone (zero frozen gradients, step, write-back) on fixed gradients, isolated from step noise; and
last ``step_time_ratio=<masked step / unmasked step>`` (medians; ``dense_step_time_ratio`` for the
old path).

    python bench/masked_sft_overhead.py [--setting ii] [--rounds 3] [--steps 2] [--batch-size 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

import torch
from common.peak_memory import PeakMemory  # bench/ is on sys.path when a bench runs

from ssah_engine.architectures import describe
from ssah_engine.audit import AuditConfig, run_audit
from ssah_engine.data import load_dataset
from ssah_engine.finetune import FinetuneConfig, FrozenSlices, ParamMasks, build_masks, frozen_units_for, make_optimizer
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
    parser.add_argument("--setting", choices=("i", "ii"), default="ii", help="freeze setting of the masked phases")
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
        setting=args.setting,
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

    phases = {
        "unmasked": (None, replace(config, mode="full", setting=None)),
        "masked": (masks, config),
        "masked_dense": (masks, replace(config, packed_optimizer=False)),
    }
    memory = PeakMemory(device)
    times: dict[str, list[float]] = {name: [] for name in phases}
    peaks = dict.fromkeys(phases, 0.0)
    state_ratio = {}
    model.train()
    for _ in range(args.rounds):
        for name, (phase_masks, phase_config) in phases.items():
            memory.reset()
            frozen = None
            if phase_masks is not None:
                phase_masks.apply(model)
                frozen = FrozenSlices(model, phase_masks, snapshot=not phase_config.packed_optimizer)
            if phase_masks is None:  # the plain arm is torch's own AdamW, the baseline the target is set against
                optimizer = make_optimizer(model, replace(phase_config, packed_optimizer=False))
            else:
                optimizer = make_optimizer(model, phase_config, phase_masks)
            train_step(model, optimizer, window, frozen, config)  # warm-up: allocates the optimizer state
            if phase_masks is not None:
                state_ratio[name] = state_bytes(optimizer) / trainable_bytes(model, phase_masks)
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

    # The optimizer step alone on fixed gradients (zero frozen ones, step, write back), isolated from step noise.
    step_only = {
        name: optimizer_step_s(model, phase_masks, phase_config) for name, (phase_masks, phase_config) in phases.items()
    }

    # Budget mode: the map's RU train, embeddings, norms and LM head frozen; state after one step.
    budget = replace(config, mode="budget", setting=None)
    budget_masks = build_masks(
        model, frozen_units_for(budget, space, unit_map), train_embeddings=False, train_norms=False, train_lm_head=False
    )
    budget_summary = budget_masks.summary(model, space)
    budget_ratio = {
        name: state_bytes(fake_step(model, budget_masks, replace(budget, packed_optimizer=packed)))
        / trainable_bytes(model, budget_masks)
        for name, packed in (("packed", True), ("dense", False))
    }

    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        " ".join(f"{name}_step_s={value:.4f}" for name, value in median.items())
        + f" (median of {args.rounds} alternating rounds x {args.steps} steps)"
    )
    print(
        " ".join(f"{name}_optimizer_step_s={value:.4f}" for name, value in step_only.items())
        + f" (optimizer step alone, {100 * step_only['masked'] / median['unmasked']:.2f} % of an unmasked step)"
    )
    print(" ".join(f"{name}_peak_mib={value:.0f}" for name, value in peaks.items()))
    print(
        f"setting={args.setting} trainable {100 * summary['trainable_fraction']:.2f} %: "
        f"optimizer_state_ratio={state_ratio['masked']:.3f} dense_optimizer_state_ratio={state_ratio['masked_dense']:.3f}"
    )
    print(
        f"budget (only RU trains: {100 * budget_summary['frozen_unit_fraction']:.0f} % of units frozen, trainable "
        f"{100 * budget_summary['trainable_fraction']:.2f} %): optimizer_state_ratio={budget_ratio['packed']:.3f} "
        f"dense_optimizer_state_ratio={budget_ratio['dense']:.3f}"
    )
    print(f"dense_step_time_ratio={median['masked_dense'] / median['unmasked']:.3f}")
    print(f"step_time_ratio={median['masked'] / median['unmasked']:.3f}")


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state: moments and step counts."""
    return sum(v.nbytes for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor))


def trainable_bytes(model: torch.nn.Module, masks: ParamMasks) -> int:
    return sum(masks.trainable_numel(name, p) * p.element_size() for name, p in model.named_parameters())


def fake_step(model: torch.nn.Module, masks: ParamMasks | None, config: FinetuneConfig) -> torch.optim.Optimizer:
    """An optimizer that took one step on small random gradients (state allocated, weights barely moved)."""
    if masks is not None:
        masks.apply(model)
    optimizer = make_optimizer(model, config, masks) if masks is not None else make_optimizer(model, config)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter) * 1e-6 if parameter.requires_grad else None
    optimizer.step()
    return optimizer


def optimizer_step_s(model: torch.nn.Module, masks: ParamMasks | None, config: FinetuneConfig, reps: int = 5) -> float:
    """Median time of zero frozen gradients + optimizer step + write-back, on fixed gradients."""
    if masks is None:
        config = replace(config, packed_optimizer=False)
    optimizer = fake_step(model, masks, config)
    frozen = FrozenSlices(model, masks, snapshot=not config.packed_optimizer) if masks is not None else None
    device = next(model.parameters()).device
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        if frozen is not None:
            frozen.zero_grads()
        optimizer.step()
        if frozen is not None:
            frozen.restore()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
        parameter.grad = None
    return statistics.median(times)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
