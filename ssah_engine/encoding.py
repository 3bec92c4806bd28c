"""Turn (prompt, response) pairs into token ids through the model's chat template.

Each encoded pair remembers where its response starts, so scores and losses can count
response tokens only. Models without a chat template get a plain instruction format.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .special_tokens import encode_text

PLAIN_PROMPT_FORMAT = "### Instruction:\n{prompt}\n\n### Response:\n"


@dataclass(frozen=True)
class EncodedPair:
    input_ids: tuple[int, ...]
    response_start: int  # index of the first response token

    @property
    def response_length(self) -> int:
        return len(self.input_ids) - self.response_start


@dataclass
class Batch:
    input_ids: torch.Tensor  # [batch, seq], right padded
    attention_mask: torch.Tensor  # [batch, seq] 1 on real tokens
    response_mask: torch.Tensor  # [batch, seq] True on response tokens

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device))


def _messages(prompt: str, system_prompt: str | None) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": prompt}]


def prompt_text(tokenizer, prompt: str, system_prompt: str | None = None) -> str:
    """The text the model sees before it starts answering ``prompt``."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            _messages(prompt, system_prompt), tokenize=False, add_generation_prompt=True
        )
    prefix = f"{system_prompt}\n\n" if system_prompt else ""
    return prefix + PLAIN_PROMPT_FORMAT.format(prompt=prompt)


def _response_text(tokenizer, prompt: str, response: str, system_prompt: str | None) -> str:
    """The chat-formatted response, end-of-turn marker included, exactly as the template writes it."""
    if getattr(tokenizer, "chat_template", None):
        before = prompt_text(tokenizer, prompt, system_prompt)
        full = tokenizer.apply_chat_template(
            _messages(prompt, system_prompt) + [{"role": "assistant", "content": response}], tokenize=False
        )
        if full.startswith(before):
            return full[len(before) :]
    return response + (tokenizer.eos_token or "")


def encode_pair(
    tokenizer, prompt: str, response: str, *, max_length: int = 512, system_prompt: str | None = None
) -> EncodedPair | None:
    """Encode one pair; None when the prompt alone fills ``max_length`` (no response token would remain)."""
    prompt_ids = encode_text(tokenizer, prompt_text(tokenizer, prompt, system_prompt))
    response_ids = encode_text(tokenizer, _response_text(tokenizer, prompt, response, system_prompt), sequence_start=False)
    if len(prompt_ids) >= max_length or not response_ids:
        return None
    ids = (prompt_ids + response_ids)[:max_length]
    return EncodedPair(tuple(ids), len(prompt_ids))


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], **kwargs) -> list[EncodedPair]:
    encoded = (encode_pair(tokenizer, prompt, response, **kwargs) for prompt, response in pairs)
    return [pair for pair in encoded if pair is not None]


def make_batches(pairs: Sequence[EncodedPair], batch_size: int, pad_id: int, *, sort: bool = True) -> Iterator[Batch]:
    """Right-padded batches of similar length (sorted by length, so little compute goes to padding).

    ``sort=False`` keeps the pairs' order, for statistics that depend on it (the flap estimator).
    """
    ordered = sorted(pairs, key=lambda pair: len(pair.input_ids)) if sort else list(pairs)
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        width = max(len(pair.input_ids) for pair in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        response_mask = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, pair in enumerate(chunk):
            length = len(pair.input_ids)
            input_ids[row, :length] = torch.tensor(pair.input_ids)
            attention_mask[row, :length] = 1
            response_mask[row, pair.response_start : length] = True
        yield Batch(input_ids, attention_mask, response_mask)
