"""Mean negative log-likelihood of responses given prompts (loss on response tokens only)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .devices import input_device
from .encoding import encode_pairs, make_batches
from .token_losses import next_token_losses


@torch.inference_mode()
def response_nll(
    model,
    tokenizer,
    pairs: Sequence[tuple[str, str]],
    *,
    batch_size: int = 8,
    max_length: int = 512,
    system_prompt: str | None = None,
) -> float:
    """Average NLL (nats per response token) of each response after its chat-formatted prompt."""
    encoded = encode_pairs(tokenizer, pairs, max_length=max_length, system_prompt=system_prompt)
    if not encoded:
        raise ValueError("no pair fits in max_length")
    device = input_device(model)
    total, tokens = 0.0, 0
    for batch in make_batches(encoded, batch_size, tokenizer.pad_token_id):
        batch = batch.to(device)
        losses = next_token_losses(model, batch.input_ids, batch.attention_mask, batch.response_mask)
        total += losses.sum().item()
        tokens += losses.numel()
    return total / tokens
