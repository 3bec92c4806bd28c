"""AdamW with frozen slices that stay bit-identical, and the learning-rate schedule.

Zeroing a frozen element's gradient keeps clipping honest and its Adam moments at zero, but
decoupled weight decay would still shrink it. So the frozen slices are snapshotted once and
written back after every optimizer step: exact whatever the optimizer does, and cheap, since
only the frozen rows/columns are copied (never a full second copy of the model). That is the
dense path (``packed_optimizer=False``); the default ``PackedAdamW`` (packed.py) keeps moments only
for trainable entries and never writes frozen ones, so it needs the zeroed gradients (for clipping)
but no snapshot.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import FinetuneConfig
from .masks import ParamMasks
from .packed import PackedAdamW, packings_for


class FrozenSlices:
    """The partly frozen tensors of a model: zero their frozen gradients, restore their frozen values."""

    def __init__(self, model: nn.Module, masks: ParamMasks, *, snapshot: bool = True):
        """``snapshot=False`` for an optimizer that never writes frozen entries (``PackedAdamW``): no copy, no restore."""
        parameters = dict(model.named_parameters())
        self.parts = []
        for name, part in masks.slices.items():
            parameter = parameters[name]
            index = part.index.to(parameter.device)
            values = parameter.detach().index_select(part.dim, index).clone() if snapshot else None
            self.parts.append((parameter, part.dim, index, values))

    def __len__(self) -> int:
        return len(self.parts)

    @torch.no_grad()
    def zero_grads(self) -> None:
        """Before clipping and the step: frozen elements contribute no gradient norm and no momentum."""
        for parameter, dim, index, _ in self.parts:
            if parameter.grad is not None:
                parameter.grad.index_fill_(dim, index, 0.0)

    @torch.no_grad()
    def restore(self) -> None:
        """After the step: put back the exact frozen values (undoes weight decay, any update)."""
        for parameter, dim, index, snapshot in self.parts:
            if snapshot is not None:
                parameter.index_copy_(dim, index, snapshot)


class Anchor:
    """Decoupled L2 toward the starting weights: ``w -= lr * strength * (w - w_start)`` after each step.

    The copy is taken before a resumed run loads its checkpoint, so it always holds the base model.
    """

    def __init__(self, model: nn.Module, strength: float):
        self.strength = strength
        self.parts = [(p, p.detach().clone()) for p in model.parameters() if p.requires_grad]

    @torch.no_grad()
    def pull(self, lr: float) -> None:
        for parameter, start in self.parts:
            parameter.sub_(parameter - start, alpha=lr * self.strength)


def make_optimizer(model: nn.Module, config: FinetuneConfig, masks: ParamMasks | None = None) -> torch.optim.AdamW:
    """AdamW over the tensors that have a trainable element; no weight decay on vectors (norms, biases).

    With ``config.packed_optimizer`` a ``PackedAdamW``, packed by ``masks`` when given (else dense
    until ``set_packings``); otherwise ``torch.optim.AdamW``, whose frozen slices ``FrozenSlices``
    must write back.
    """
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("nothing to train: every parameter is frozen")
    groups = [
        {"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    # foreach (not fused): fast on CPU and CUDA alike, and the same arithmetic on resume.
    if config.packed_optimizer:
        packings = packings_for(model, masks) if masks is not None else {}
        return PackedAdamW(groups, lr=config.lr, betas=config.betas, foreach=True, packings=packings)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, foreach=True)


def lr_factor(step: int, total_steps: int, config: FinetuneConfig) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warm-up, then cosine/linear/constant."""
    warmup = int(round(config.warmup_ratio * total_steps))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if config.schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    if config.schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer, total_steps: int, config: FinetuneConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, config))
