"""Turn (prompt, response) pairs into token ids through the model's chat template.

Each encoded pair remembers where its response starts, so scores and losses can count
response tokens only. Models without a chat template get a plain instruction format.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .audit_config import RESPONSE_TOKENS
from .special_tokens import encode_text

PLAIN_PROMPT_FORMAT = "### Instruction:\n{prompt}\n\n### Response:\n"

# Markers of a prompt already written in some model's chat format (the SSAH authors' CSVs hold
# "[INST] ... [/INST]"): wrapping such a prompt in a template would format it twice.
CHAT_MARKERS = (
    "[INST]",
    "[/INST]",
    "<<SYS>>",
    "<|im_start|>",
    "<|im_end|>",
    "<|start_header_id|>",
    "<|eot_id|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "### Instruction:",
    "### Response:",
)


class PreformattedPromptError(ValueError):
    """A prompt that already holds chat-format markers was about to be wrapped in a template."""


def check_not_preformatted(prompt: str) -> None:
    """Refuse a prompt written in a chat format already, naming the marker found."""
    found = next((marker for marker in CHAT_MARKERS if marker in prompt), None)
    if found is not None:
        raise PreformattedPromptError(
            f"the prompt {prompt[:60]!r} already holds the chat marker {found!r}: it was written for one "
            "model's format, and the chat template would wrap it a second time. Remove the markers and "
            "keep the request itself (for the authors' '[INST] ... [/INST]' CSVs: the text between them); "
            "an evaluation can take such prompts as given with prompt_format raw"
        )


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
    """The text the model sees before it starts answering ``prompt`` (refused if already chat-formatted)."""
    check_not_preformatted(prompt)
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


def _content_only(text: str, response: str) -> str:
    """``text`` (the template's response segment) cut after the response's own words."""
    words = response.strip()
    position = text.find(words)
    return text[: position + len(words)] if position >= 0 and words else response


def encode_pair(
    tokenizer,
    prompt: str,
    response: str,
    *,
    max_length: int = 512,
    system_prompt: str | None = None,
    response_tokens: str = "template",
) -> EncodedPair | None:
    """Encode one pair; None when the prompt alone fills ``max_length`` (no response token would remain).

    ``response_tokens`` says what counts as the response: ``template``, everything the template
    writes for the assistant turn (end-of-turn marker and trailing newline included), or
    ``content``, the response's own words only.
    """
    if response_tokens not in RESPONSE_TOKENS:
        raise ValueError(f"response_tokens must be one of {', '.join(RESPONSE_TOKENS)}, got {response_tokens!r}")
    prompt_ids = encode_text(tokenizer, prompt_text(tokenizer, prompt, system_prompt))
    response_text = _response_text(tokenizer, prompt, response, system_prompt)
    if response_tokens == "content":
        response_text = _content_only(response_text, response)
    response_ids = encode_text(tokenizer, response_text, sequence_start=False)
    if len(prompt_ids) >= max_length or not response_ids:
        return None
    ids = (prompt_ids + response_ids)[:max_length]
    return EncodedPair(tuple(ids), len(prompt_ids))


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], **kwargs) -> list[EncodedPair]:
    """Encode every pair (see ``encode_pair``), dropping those whose prompt fills ``max_length``."""
    encoded = []
    for number, (prompt, response) in enumerate(pairs, start=1):
        try:
            pair = encode_pair(tokenizer, prompt, response, **kwargs)
        except PreformattedPromptError as error:
            raise PreformattedPromptError(f"pair {number}: {error}") from None
        if pair is not None:
            encoded.append(pair)
    return encoded


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
