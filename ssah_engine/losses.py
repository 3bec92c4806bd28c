"""Mean negative log-likelihood of responses given prompts (loss on response tokens only)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .encoding import encode_pairs, make_batches


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
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    for batch in make_batches(encoded, batch_size, tokenizer.pad_token_id):
        batch = batch.to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        # Position t predicts token t+1: score a response token from the logits just before it.
        targets = batch.input_ids[:, 1:]
        scored = batch.response_mask[:, 1:]
        losses = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
        total += losses[scored].sum().item()
        tokens += int(scored.sum())
    return total / tokens
