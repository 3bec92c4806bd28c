"""Masked fine-tuning data-parallel over ``torch.distributed`` ranks (gloo on CPU, nccl on GPUs).

Each rank holds the whole model and takes every ``world``-th micro-batch of a step's window; the
loss is divided by the token count of the *whole* window (every rank knows it: the batches are a
pure function of seed and step), so the sum of the ranks' gradients is the single-process gradient.
That sum is one ``all_reduce`` per step over a flat buffer holding **only the trainable entries**:
tensors frozen whole have no gradient and are skipped, partly frozen ones contribute only their
trainable rows/columns (``index_select`` of the complement of the frozen index). Frozen gradients
are therefore never communicated; they stay the zeros ``FrozenSlices.zero_grads`` wrote. Every
rank then runs the same optimizer step on the same gradients, so the weights stay identical on
every rank without a broadcast, and frozen slices stay bit-exact as in the single-process run.

This is DDP's arithmetic without ``DistributedDataParallel``: DDP's buckets always reduce whole
gradients, and its hooks fire per bucket during backward. The price is no overlap of communication
with backward, which a masked run (most rows frozen) needs least. Sharded weights (FSDP2) are
``fsdp.py``; docs/scale.md compares the two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .masks import ParamMasks

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among the data-parallel ranks (the process group is already initialised)."""

    rank: int
    world: int

    def __post_init__(self):
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is not in a world of {self.world}")

    @classmethod
    def current(cls) -> "Shard | None":
        """The initialised default process group as a shard; None when not distributed (or a world of 1)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return None
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints and results; the others compute the same weights."""
        return self.rank == 0

    def mine(self, window: list[T]) -> list[T]:
        """This rank's micro-batches of a step: every ``world``-th, starting at ``rank``."""
        return window[self.rank :: self.world]

    def barrier(self) -> None:
        dist.barrier()


class TrainableGradReducer:
    """Sums the trainable entries of the gradients over the ranks, in one collective per step."""

    def __init__(self, model: nn.Module, masks: ParamMasks):
        self.parts: list[tuple[nn.Parameter, int | None, torch.Tensor | None]] = []
        self.dense_numel = 0  # what DDP would send: every gradient of a tensor with a trainable element
        self.numel = 0
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad or name in masks.whole:
                continue
            self.dense_numel += parameter.numel()
            part = masks.slices.get(name)
            if part is None:
                self.parts.append((parameter, None, None))
                self.numel += parameter.numel()
                continue
            keep = torch.ones(parameter.shape[part.dim], dtype=torch.bool)
            keep[part.index] = False
            index = keep.nonzero().flatten().to(parameter.device)
            self.parts.append((parameter, part.dim, index))
            self.numel += index.numel() * parameter.numel() // parameter.shape[part.dim]
        logger.info(
            "gradient all-reduce: %d trainable entries per step, %.1f %% of the %d a dense all-reduce sends",
            self.numel,
            100 * self.numel / max(self.dense_numel, 1),
            self.dense_numel,
        )

    @torch.no_grad()
    def all_reduce(self, loss_sum: float) -> float:
        """Replace each rank's trainable gradients by their sum over ranks; return the summed ``loss_sum``."""
        pieces = []
        for parameter, dim, index in self.parts:
            if parameter.grad is None:  # a rank with no micro-batch this step still joins the sum
                parameter.grad = torch.zeros_like(parameter)
            full = parameter.grad
            piece = full if dim is None or index is None else full.index_select(dim, index)
            pieces.append(piece.reshape(-1).float())
        # float32 on the wire whatever the parameter dtype: bf16 sums over ranks would round twice.
        device = pieces[0].device if pieces else torch.device("cpu")
        flat = torch.cat(pieces + [torch.tensor([loss_sum], dtype=torch.float32, device=device)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for parameter, dim, index in self.parts:
            grad = parameter.grad
            assert grad is not None  # every part was given one above
            shape = list(parameter.shape)
            if dim is not None and index is not None:
                shape[dim] = index.numel()
            count = int(torch.Size(shape).numel())
            summed = flat[offset : offset + count].view(shape).to(grad.dtype)
            offset += count
            if dim is None or index is None:
                grad.copy_(summed)
            else:
                grad.index_copy_(dim, index, summed)
        return float(flat[offset])
