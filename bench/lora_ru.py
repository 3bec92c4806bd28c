"""Safety-aware LoRA (rank ``--rank``, adapters restricted to RU) against full-rank RU-only training.

Both arms start from the same random-weight SmolLM2-shaped llama (bench/common/fabricated.py:
SmolLM2-135M's layer shape, ``--layers`` decoder layers, the byte-level test tokenizer's
vocabulary, weights from a seed) and the same unit map (random scores classified at the paper's
cuts), in budget mode: only the RU rows/columns may change, embeddings, norms and LM head frozen.

  ru_full = the RU rows/columns themselves train (packed AdamW: moments for trainable entries only)
  lora    = ``finetune.lora``: a peft LoRA adapter on every projection with an RU row/column, its
            ``lora_B`` rows / ``lora_A`` columns outside RU zeroed and held there (packed AdamW)

Both take the same windows of builtin:benign_sft, one step of each in turn (machine noise hits them
alike); step 1 of each is an untimed warm-up (it allocates the optimizer state). Then the LoRA arm
is saved as a PEFT adapter directory and the RU-only arm with ``save_pretrained`` (the whole model
a full-rank run must ship), and the adapter is merged (``merge_and_unload``). It prints:

  trainable_params_ratio=  LoRA trainable entries / full-rank RU-only trainable entries
  optimizer_state_ratio=   LoRA optimizer-state bytes / RU-only optimizer-state bytes
  saved_bytes_ratio=       adapter directory bytes / full model directory bytes
  step_time_ratio=         median LoRA step / median RU-only step (same batches)
  outside_ru_changed=      entries outside RU that differ from the start, merged LoRA model (must be 0)
  outside_ru_changed_full_rank=, ru_changed=, ru_changed_full_rank=   the same checks for the other
                           arm, and how many RU entries moved (the arms did train)

    python bench/lora_ru.py [--layers 2] [--steps 5] [--rank 8] [--batch-size 2] [--grad-accum 2] [--max-length 128]
    python bench/lora_ru.py --tiny          # a tiny shape, seconds: what tests/engine/test_bench_finetune.py runs
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository
from common.fabricated import class_shares, random_model, random_unit_map  # noqa: E402

from ssah_engine.architectures import describe  # noqa: E402
from ssah_engine.data import load_dataset  # noqa: E402
from ssah_engine.finetune import FinetuneConfig, FrozenSlices, build_masks, frozen_units_for, make_optimizer  # noqa: E402
from ssah_engine.finetune.batches import StepBatches  # noqa: E402
from ssah_engine.finetune.lora import lora_targets, save_adapter, wrap_model  # noqa: E402
from ssah_engine.finetune.trainer import train_step  # noqa: E402
from ssah_engine.units import UnitSpace  # noqa: E402


def directory_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state: moments and step counts."""
    return sum(v.nbytes for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each arm (after one warm-up step)")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--tiny", action="store_true", help="a tiny shape, 2 timed steps of short pairs: seconds")
    args = parser.parse_args()
    shape = "smollm2"
    if args.tiny:
        shape, args.steps, args.max_length = "tiny", 2, 64
    torch.set_num_threads(args.threads)

    config = FinetuneConfig(
        mode="budget",
        lr=1e-3,
        weight_decay=0.1,
        warmup_ratio=0.0,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        max_steps=args.steps + 1,
        max_grad_norm=1.0,
    )
    lora_config = replace(config, lora_rank=args.rank)
    full_model, tokenizer = random_model(shape, args.layers, seed=args.seed)
    lora_base, _ = random_model(shape, args.layers, seed=args.seed)
    base = {name: p.detach().clone() for name, p in full_model.named_parameters()}
    layout = describe(full_model)
    space = UnitSpace.from_layout(layout)
    unit_map = random_unit_map(full_model, seed=args.seed)
    units = frozen_units_for(config, space, unit_map)

    def masks_for(model):
        return build_masks(
            model,
            units,
            train_embeddings=config.trains("embeddings"),
            train_norms=config.trains("norms"),
            train_lm_head=config.trains("lm_head"),
        )

    masks = masks_for(full_model)
    masks.apply(full_model)
    full_optimizer = make_optimizer(full_model, config, masks)
    full_frozen = FrozenSlices(full_model, masks, snapshot=False)

    lora_masks_base = masks_for(lora_base)
    targets = lora_targets(lora_base, lora_masks_base, describe(lora_base))
    lora_model, lora_masks = wrap_model(lora_base, targets, lora_config, f"random:{shape}")
    lora_masks.apply(lora_model)
    lora_optimizer = make_optimizer(lora_model, lora_config, lora_masks)
    lora_frozen = FrozenSlices(lora_model, lora_masks, snapshot=False)

    data = StepBatches(tokenizer, load_dataset("builtin:benign_sft", require_response=True), config)
    arms = {
        "ru_full": (full_model, full_optimizer, full_frozen, config),
        "lora": (lora_model, lora_optimizer, lora_frozen, lora_config),
    }
    times: dict[str, list[float]] = {name: [] for name in arms}
    for model, *_ in arms.values():
        model.train()
    for step in range(data.total_steps):
        window = data.window(step)
        for name, (model, optimizer, frozen, arm_config) in arms.items():
            started = time.perf_counter()
            train_step(model, optimizer, window, frozen, arm_config)
            if step:
                times[name].append(time.perf_counter() - started)
    for model, *_ in arms.values():
        model.eval()

    full_trainable = sum(masks.trainable_numel(name, p) for name, p in full_model.named_parameters())
    lora_trainable = sum(masks_numel for masks_numel in lora_trainable_numels(lora_model, lora_masks))
    full_state, lora_state = state_bytes(full_optimizer), state_bytes(lora_optimizer)
    with tempfile.TemporaryDirectory() as scratch:
        adapter_dir = save_adapter(lora_model, Path(scratch) / "lora")
        model_dir = Path(scratch) / "ru_full" / "model"
        full_model.save_pretrained(model_dir)
        adapter_bytes, model_bytes = directory_bytes(adapter_dir), directory_bytes(model_dir)
    merged = lora_model.merge_and_unload()

    def changed(model) -> tuple[int, int]:
        """(entries outside RU that moved, RU entries that moved) against the start."""
        outside = inside = 0
        for name, parameter in model.named_parameters():
            moved = parameter.detach() != base[name]
            trainable = masks.trainable(name, parameter.shape)
            outside += int(moved[~trainable].sum())
            inside += int(moved[trainable].sum())
        return outside, inside

    outside_lora, inside_lora = changed(merged)
    outside_full, inside_full = changed(full_model)
    summary = masks.summary(full_model, space)
    print(
        f"shape={shape} layers={args.layers} parameters={sum(p.numel() for p in full_model.parameters())} "
        f"lora_rank={args.rank} targets={len(targets)} batch={args.batch_size}x{args.grad_accum} pairs per step "
        f"({sum(int(batch.attention_mask.sum()) for batch in data.window(0))} tokens) timed_steps={args.steps} "
        f"threads={torch.get_num_threads()}"
    )
    print(
        "unit shares (random map, paper cuts): "
        + " ".join(f"{name}={100 * share:.1f}%" for name, share in class_shares(unit_map).items())
        + f"; budget mode trains {100 * summary['trainable_fraction']:.2f} % of parameters"
    )
    print(f"ru_full_trainable={full_trainable} lora_trainable={lora_trainable}")
    print(f"ru_full_optimizer_state_bytes={full_state} lora_optimizer_state_bytes={lora_state}")
    print(f"model_dir_bytes={model_bytes} adapter_dir_bytes={adapter_bytes}")
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(" ".join(f"{name}_step_s={value:.4f}" for name, value in medians.items()))
    print(f"trainable_params_ratio={lora_trainable / full_trainable:.4f}")
    print(f"optimizer_state_ratio={lora_state / full_state:.4f}")
    print(f"saved_bytes_ratio={adapter_bytes / model_bytes:.4f}")
    print(f"step_time_ratio={medians['lora'] / medians['ru_full']:.3f}")
    print(f"ru_changed={inside_lora} ru_changed_full_rank={inside_full}")
    print(f"outside_ru_changed_full_rank={outside_full}")
    print(f"outside_ru_changed={outside_lora}")


def lora_trainable_numels(model, masks):
    """Trainable entries of each adapter tensor (the base tensors are frozen whole)."""
    return [masks.trainable_numel(name, p) for name, p in model.named_parameters() if "lora_" in name]


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
