"""The supervised fine-tuning loop: loss on response tokens only, masks applied at every step."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..encoding import Batch
from ..token_losses import next_token_losses
from .batches import StepBatches
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import FinetuneConfig
from .distributed import Shard, TrainableGradReducer
from .masks import ParamMasks
from .optimizer import Anchor, FrozenSlices, make_optimizer, make_scheduler
from .packed import PackedAdamW, packings_for

logger = logging.getLogger(__name__)

# (stage, fraction of the run done in [0, 1])
ProgressFn = Callable[[str, float], None]


def autocast_for(device: torch.device, config: FinetuneConfig):
    """bf16 autocast on CUDA when asked; CPU trains in the model's own dtype."""
    if device.type == "cuda" and config.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def response_tokens(window: list[Batch]) -> int:
    """Tokens the loss counts: response tokens that have a preceding position (targets of a shift)."""
    return sum(int(batch.response_mask[:, 1:].sum()) for batch in window)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    window: list[Batch],
    frozen: FrozenSlices | None,
    config: FinetuneConfig,
    anchor: Anchor | None = None,
    *,
    shard: Shard | None = None,
    reducer: TrainableGradReducer | None = None,
) -> float:
    """One optimizer step over ``window`` (gradient accumulation); returns the mean response-token loss.

    With ``shard`` and ``reducer`` this rank runs its share of the window and the trainable
    gradients are summed over the ranks before clipping (distributed.py).
    """
    device = next(model.parameters()).device
    tokens = max(response_tokens(window), 1)  # of the whole window, on every rank
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for batch in shard.mine(window) if shard is not None else window:
        batch = batch.to(device)
        with autocast_for(device, config):
            # Summed over the window's response tokens, then one mean for the step.
            loss = next_token_losses(model, batch.input_ids, batch.attention_mask, batch.response_mask).sum()
        (loss / tokens).backward()
        total += loss.item()
    if frozen is not None:
        frozen.zero_grads()
    if reducer is not None:
        total = reducer.all_reduce(total)
    if config.max_grad_norm is not None:
        trainable = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
    optimizer.step()
    if anchor is not None:
        anchor.pull(optimizer.param_groups[0]["lr"])
    if frozen is not None:
        frozen.restore()
    return total / tokens


def train(
    model: nn.Module,
    data: StepBatches,
    masks: ParamMasks,
    config: FinetuneConfig,
    out_dir: Path,
    progress: ProgressFn | None = None,
    *,
    phases: Sequence[tuple[int, ParamMasks]] = (),
    tracker=None,
    shard: Shard | None = None,
) -> list[dict]:
    """Train ``model`` in place; return the loss curve (one entry per optimizer step).

    ``phases``: (first step, masks) pairs when the masks change during the run (the paper's
    schedule); by default ``masks`` for every step. The optimizer covers every tensor that trains
    in some phase; a tensor frozen whole in the current phase has no gradient, so AdamW leaves it.
    ``tracker`` (a ``RefusalTracker``): its margins join the entries of every ``track_every``-th
    step and the last, and its stop rule may end the run early.
    ``shard``: data-parallel over ``torch.distributed`` ranks; rank 0 writes the checkpoints, every
    rank resumes from them.
    """
    device = next(model.parameters()).device
    phases = list(phases) or [(0, masks)]
    trains_somewhere = {name: any(name not in part.whole for _, part in phases) for name, _ in model.named_parameters()}

    def train_all_phases() -> None:
        """requires_grad on every tensor some phase trains: what the optimizer and checkpoints hold."""
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(trains_somewhere[name])

    train_all_phases()
    torch.manual_seed(config.seed)
    if device.type == "cuda" and config.gradient_checkpointing:
        # type: ignore: a transformers model's method, which nn.Module's __getattr__ types as a Tensor.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})  # type: ignore[operator]
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, data.total_steps, config)
    anchor = Anchor(model, config.anchor) if config.anchor else None  # before a checkpoint is loaded
    history: list[dict]
    start, history = 0, []
    checkpoint = latest_checkpoint(out_dir) if config.resume else None
    if checkpoint is not None:
        start, history = load_checkpoint(checkpoint, model, optimizer, scheduler)
    elif config.resume:
        logger.info("no checkpoint in %s: starting from step 0", out_dir)

    reducer: TrainableGradReducer | None = None

    def enter(step: int) -> tuple[FrozenSlices, int]:
        """Masks of the phase holding ``step``; the snapshot comes from the weights actually trained."""
        nonlocal reducer  # the reduced slices follow the phase's masks
        number = max(i for i, (first, _) in enumerate(phases) if first <= step)
        phases[number][1].apply(model)
        if isinstance(optimizer, PackedAdamW):  # converts a loaded state (packed by its phase) to this phase's
            optimizer.set_packings(packings_for(model, phases[number][1]))
        # PackedAdamW never writes frozen entries: no snapshot to restore them from.
        frozen = FrozenSlices(model, phases[number][1], snapshot=not isinstance(optimizer, PackedAdamW))
        if shard is not None:
            reducer = TrainableGradReducer(model, phases[number][1])
        logger.info(
            "training steps %d-%d of %d (%d per epoch), %d partly frozen tensors, %d frozen whole",
            step + 1,
            phases[number + 1][0] if number + 1 < len(phases) else data.total_steps,
            data.total_steps,
            data.steps_per_epoch,
            len(frozen),
            len(phases[number][1].whole),
        )
        return frozen, number

    frozen, phase = enter(start)
    model.train()
    try:
        for step in range(start, data.total_steps):
            if phase + 1 < len(phases) and step >= phases[phase + 1][0]:
                frozen, phase = enter(step)
            lr = optimizer.param_groups[0]["lr"]
            loss = train_step(model, optimizer, data.window(step), frozen, config, anchor, shard=shard, reducer=reducer)
            scheduler.step()
            entry = {"step": step + 1, "loss": loss, "lr": lr}
            history.append(entry)
            done = step + 1 == data.total_steps
            if tracker is not None and ((step + 1) % config.track_every == 0 or done):
                entry.update(tracker.measure(model))
                done = tracker.should_stop(step + 1, entry) or done
            if (step + 1) % config.log_every == 0 or done:
                logger.info("step %d/%d loss %.4f lr %.2e", step + 1, data.total_steps, loss, lr)
            if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0 and not done:
                train_all_phases()
                if shard is None or shard.main:
                    save_checkpoint(out_dir, step + 1, model, optimizer, scheduler, history, config.keep_checkpoints)
                if shard is not None:
                    shard.barrier()  # no rank runs ahead of a checkpoint it might resume from
                phases[phase][1].apply(model)
            if progress and (shard is None or shard.main):
                progress(f"step {step + 1}/{data.total_steps} loss {loss:.4f}", (step + 1) / data.total_steps)
            if done:
                break
    finally:
        model.eval()
        if device.type == "cuda" and config.gradient_checkpointing:
            model.gradient_checkpointing_disable()  # type: ignore[operator]  # a transformers model's method
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    return history
