"""Passing a key/value cache to a model across transformers versions.

Transformers 5.x renamed the ``past_key_values`` argument and output field to ``cache``; older
releases ignore an unknown ``cache=`` keyword silently, which would drop the prompt context.
Also the shared-prefix cache that scoring, the probe and evaluation reuse across prompts.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence

import torch
from torch import nn

from .devices import input_device


def cache_argument(module: nn.Module) -> str:
    """The keyword ``module.forward`` takes a cache under (``cache`` or ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def returned_cache(output):
    """The cache a forward pass with ``use_cache=True`` returned."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def common_prefix(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence shares."""
    first = sequences[0]
    length = min(len(sequence) for sequence in sequences)
    for sequence in sequences[1:]:
        for index in range(length):
            if sequence[index] != first[index]:
                length = index
                break
    return length


def sliding_window(model: nn.Module) -> int | None:
    """The attention window of a model that uses one (Gemma, Mistral, Phi-3), else None."""
    config = getattr(model, "config", None)
    window = getattr(config, "sliding_window", None)
    if not window or getattr(config, "use_sliding_window", True) is False:
        return None
    return int(window)


class SharedPrefix:
    """The tokens every prompt opens with (a chat template's system turn), run once and reused.

    Causal attention makes every later state independent of how the prefix was computed, so a
    batch can start from copies of this cache and feed only its own tokens. At least one token of
    each prompt is left unshared, so the pass over the rest still yields next-token logits.
    """

    def __init__(self, model: nn.Module, prompts: Sequence[Sequence[int]], enabled: bool = True, extra_tokens: int = 0):
        # Padding then sits between the prefix and a prompt's own tokens; a sliding window counts
        # cache slots, padding included, so a windowed model shares only when every row fits the window.
        window = sliding_window(model)
        fits = window is None or max(len(p) for p in prompts) + extra_tokens <= window
        shared = min(common_prefix(prompts), min(len(p) for p in prompts) - 1)
        self.length = max(shared, 0) if enabled and fits else 0
        self.tokens = list(prompts[0][: self.length])
        self.cache = None
        if self.length:
            device = input_device(model)
            with torch.inference_mode():
                output = model(input_ids=torch.tensor([self.tokens], device=device), use_cache=True, logits_to_keep=1)
            self.cache = returned_cache(output)

    def copies(self, count: int):
        """A fresh cache of ``count`` identical rows holding the prefix (None without a prefix)."""
        if self.cache is None:
            return None
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(count)
        return cache
