"""Token-level perplexity of plain text, each paragraph scored on its own.

exp(total NLL / scored tokens) over all paragraphs. A paragraph is tokenized like every other
path (``special_tokens.encode_text``: the tokenizer's BOS where it adds one, never a trailing
EOS) and its first token is not scored.
A paragraph longer than ``max_length`` is scored in sliding windows of ``max_length`` tokens
that advance by ``stride``; each token is scored once, with at least max_length - stride
tokens of context after the first window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..devices import input_device
from ..special_tokens import encode_text
from ..token_losses import next_token_losses


@dataclass(frozen=True)
class Perplexity:
    perplexity: float
    nll: float  # nats per scored token
    tokens: int  # scored tokens


def _windows(ids: list[int], max_length: int, stride: int) -> list[tuple[list[int], int]]:
    """(window ids, index of the first token scored in it) covering every token after the first once."""
    if len(ids) <= max_length:
        return [(ids, 1)]
    windows, scored_until = [], 1
    for start in range(0, len(ids), stride):
        end = min(start + max_length, len(ids))
        windows.append((ids[start:end], max(scored_until - start, 1)))
        scored_until = end
        if end == len(ids):
            break
    return windows


@torch.inference_mode()
def perplexity(
    model, tokenizer, texts: Sequence[str], *, max_length: int = 1024, stride: int = 512, batch_size: int = 8
) -> Perplexity:
    """Perplexity of ``texts`` (one paragraph each) under ``model``."""
    if not 0 < stride <= max_length:
        raise ValueError(f"stride must be in 1..max_length ({max_length}), got {stride}")
    device = input_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    windows = []
    for text in texts:
        windows.extend(_windows(encode_text(tokenizer, text), max_length, stride))
    windows = [window for window in windows if len(window[0]) > window[1]]
    if not windows:
        raise ValueError("no text long enough to score (every paragraph is a single token)")
    windows.sort(key=lambda window: len(window[0]))
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        chunk = windows[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        scored = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, (ids, first) in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention_mask[row, : len(ids)] = 1
            scored[row, first : len(ids)] = True
        input_ids, attention_mask, scored = input_ids.to(device), attention_mask.to(device), scored.to(device)
        total += next_token_losses(model, input_ids, attention_mask, scored).double().sum().item()
        count += int(scored[:, 1:].sum())
    nll = total / count
    return Perplexity(math.exp(nll), nll, count)
