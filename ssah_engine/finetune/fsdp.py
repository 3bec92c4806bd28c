"""Masked fine-tuning with sharded weights: FSDP2 (``torch.distributed.fsdp.fully_shard``) over ranks.

Each decoder layer and then the root are sharded: every parameter becomes a DTensor split by rows
(``Shard(0)``) over the mesh, so a rank holds 1/world of the weights, gradients and AdamW moments.
FSDP2 keeps the original parameters (what FSDP1 needs ``use_orig_params=True`` for), so tensors
frozen whole simply have ``requires_grad=False``: no gradient, no reduce-scatter, no optimizer state.
Partly frozen tensors are masked on each rank's own shard: the frozen rows of a row-masked tensor
that fall in this rank's row range (shifted to local indices), every frozen column of a
column-masked one. Their gradients are zeroed before clipping and the step, and their values are
written back after it, as ``FrozenSlices`` does in the single-process run, so frozen slices stay
bit-exact. Unlike ``distributed.py``, FSDP's reduce-scatter still carries the frozen rows of a
partly frozen tensor (zeros): FSDP communicates whole flat shards.

Data layout as in ``distributed.py``: each rank takes every ``world``-th micro-batch of a step's
window and the loss is divided by the whole window's token count and multiplied by the world size,
which FSDP's reduce-scatter divides by again (exact for a power-of-two world), so the gradients are
the single-process ones. Every rank runs the same number of
forwards (FSDP gathers weights in each), a rank short of micro-batches runs one with zero weight.

Not here: checkpoints and resume (a sharded state dict), the paper's phase schedule (masks that
change mid-run), the packed optimizer and the anchor; ``train_fsdp`` refuses those settings.
"""

from __future__ import annotations

import logging
import math
import typing
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..architectures import describe
from .batches import StepBatches
from .config import FinetuneConfig
from .distributed import Shard
from .masks import ParamMasks
from .optimizer import make_optimizer, make_scheduler
from .trainer import response_tokens

logger = logging.getLogger(__name__)


def shard_model(model: nn.Module, mesh) -> nn.Module:
    """``fully_shard`` every decoder layer, then the root; returns ``model`` (now an ``FSDPModule``)."""
    from torch.distributed.fsdp import fully_shard

    layout = describe(model)
    for layer in model.get_submodule(layout.layers_path).children():
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a sharded parameter or gradient (a DTensor), as a plain tensor sharing its storage."""
    return typing.cast(Any, tensor).to_local()


def _local_rows(index: torch.Tensor, size: int, rank: int, world: int) -> torch.Tensor:
    """The entries of ``index`` (rows of a tensor of ``size`` rows) in ``rank``'s Shard(0) chunk, made local."""
    chunk = math.ceil(size / world)
    start, stop = min(rank * chunk, size), min((rank + 1) * chunk, size)
    return index[(index >= start) & (index < stop)] - start


class ShardedFrozenSlices:
    """``FrozenSlices`` on each rank's own shard of the sharded parameters."""

    def __init__(self, model: nn.Module, masks: ParamMasks, shard: Shard):
        parameters = dict(model.named_parameters())
        self.parts = []
        for name, part in masks.slices.items():
            parameter = parameters[name]
            local = _local(parameter)
            index = part.index.to(local.device)
            if part.dim == 0:
                index = _local_rows(index, parameter.shape[0], shard.rank, shard.world)
            if index.numel():
                self.parts.append((parameter, part.dim, index, local.detach().index_select(part.dim, index).clone()))

    @torch.no_grad()
    def zero_grads(self) -> None:
        for parameter, dim, index, _ in self.parts:
            if parameter.grad is not None:
                _local(parameter.grad).index_fill_(dim, index, 0.0)

    @torch.no_grad()
    def restore(self) -> None:
        for parameter, dim, index, snapshot in self.parts:
            _local(parameter).index_copy_(dim, index, snapshot)


def _response_losses(model: nn.Module, batch) -> torch.Tensor:
    """``next_token_losses`` through the root module: its forward is what makes FSDP gather the embeddings and
    the head (the head-only path calls the decoder directly and would meet them still sharded)."""
    scored = batch.response_mask[:, 1:]
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    return F.cross_entropy(logits[:, :-1][scored].float(), batch.input_ids[:, 1:][scored], reduction="none")


def fsdp_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    window: list,
    frozen: ShardedFrozenSlices,
    config: FinetuneConfig,
    shard: Shard,
) -> float:
    """One optimizer step of the sharded model over ``window``; returns the window's mean response-token loss."""
    tokens = max(response_tokens(window), 1)
    optimizer.zero_grad(set_to_none=True)
    mine = shard.mine(window)
    rounds = math.ceil(len(window) / shard.world)  # forwards per rank: the same on every rank
    total = torch.zeros((), dtype=torch.float64)
    for number in range(rounds):
        batch, weight = (mine[number], 1.0) if number < len(mine) else (window[0], 0.0)
        loss = _response_losses(model, batch).sum()
        # reduce-scatter averages over ranks (a divide factor of 1 needs PREMUL_SUM, which gloo lacks): x world
        (loss * (weight * shard.world) / tokens).backward()
        total += loss.detach().double() * weight
    frozen.zero_grads()
    if config.max_grad_norm is not None:
        trainable = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
    optimizer.step()
    frozen.restore()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total) / tokens


def check_fsdp_config(config: FinetuneConfig) -> None:
    """Raise ValueError naming the settings the FSDP path refuses (``run_finetune`` asks before loading data)."""
    refused = {
        "resume": config.resume,
        "checkpoint_every": bool(config.checkpoint_every),
        "packed_optimizer": config.packed_optimizer,
        "anchor": bool(config.anchor),
    }
    if any(refused.values()):
        raise ValueError(
            "the FSDP path trains without checkpoints, the packed optimizer or the anchor; unset "
            + ", ".join(name for name, value in refused.items() if value)
        )


def train_fsdp(model: nn.Module, data: StepBatches, masks: ParamMasks, config: FinetuneConfig, shard: Shard, mesh):
    """Shard ``model`` over ``mesh`` and train it with ``masks``; returns the loss curve. Every rank calls it."""
    check_fsdp_config(config)
    masks.apply(model)  # before sharding: FSDP2 sees which tensors train
    torch.manual_seed(config.seed)
    shard_model(model, mesh)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, data.total_steps, config)
    frozen = ShardedFrozenSlices(model, masks, shard)
    history = []
    model.train()
    try:
        for step in range(data.total_steps):
            lr = optimizer.param_groups[0]["lr"]
            loss = fsdp_train_step(model, optimizer, data.window(step), frozen, config, shard)
            scheduler.step()
            history.append({"step": step + 1, "loss": loss, "lr": lr})
            if (step + 1) % config.log_every == 0:
                logger.info(
                    "step %d/%d loss %.4f lr %.2e (FSDP, %d ranks)", step + 1, data.total_steps, loss, lr, shard.world
                )
    finally:
        model.eval()
    return history


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter gathered whole (a collective: every rank calls it)."""
    return {
        name: typing.cast(Any, parameter).full_tensor().detach().clone() for name, parameter in model.named_parameters()
    }
