"""Training batches: chat-formatted pairs, reshuffled each epoch from the seed, grouped per optimizer step.

The order is a pure function of (seed, step), so a resumed run sees exactly the batches an
uninterrupted run would, with no data-loader state to save.
"""

from __future__ import annotations

import math

import torch

from ..data import Dataset
from ..encoding import Batch, encode_pairs, make_batches
from .config import FinetuneConfig


class StepBatches:
    """The micro-batches of every optimizer step of a run."""

    def __init__(self, tokenizer, dataset: Dataset, config: FinetuneConfig):
        pairs = [(example.prompt, example.response) for example in dataset.examples if example.response]
        self.encoded = encode_pairs(tokenizer, pairs, max_length=config.max_length, system_prompt=config.system_prompt)
        if not self.encoded:
            raise ValueError(f"no pair of {dataset.name} has a response that fits in max_length={config.max_length}")
        self.pad_id = tokenizer.pad_token_id
        self.seed = config.seed
        self.batch_size = config.batch_size
        self.grad_accum = config.grad_accum
        micro_batches = math.ceil(len(self.encoded) / config.batch_size)
        self.steps_per_epoch = math.ceil(micro_batches / config.grad_accum)
        self.total_steps = (config.max_steps or config.epochs * self.steps_per_epoch) * config.length_factor

    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.encoded), generator=generator).tolist()

    def window(self, step: int) -> list[Batch]:
        """The micro-batches whose gradients are summed into optimizer step ``step`` (0-based)."""
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        per_step = self.batch_size * self.grad_accum
        chosen = [self.encoded[i] for i in order[within * per_step : (within + 1) * per_step]]
        return [
            next(make_batches(chosen[start : start + self.batch_size], self.batch_size, self.pad_id))
            for start in range(0, len(chosen), self.batch_size)
        ]
