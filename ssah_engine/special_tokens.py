"""Tokenize the start of a sequence the way the tokenizer itself would: its BOS, once.

Llama-style tokenizers prepend a BOS token (for Llama models the attention sink), GPT-2-style
ones add nothing. Rendered chat text often holds the BOS already (Llama-2's template writes
``<s>``), so every path tokenizes without special tokens and then prepends the tokenizer's own
leading special ids only when the text did not already begin with them. Scoring, training,
generation, the refusal margin and perplexity all go through ``encode_text``.
"""

from __future__ import annotations

_PROBE = "a"


def leading_special_ids(tokenizer) -> list[int]:
    """The ids the tokenizer puts before a text when asked to add special tokens ([bos] or [])."""
    plain = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
    full = tokenizer(_PROBE, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []  # the probe tokenized differently with specials: add nothing rather than guess


def encode_text(tokenizer, text: str, *, sequence_start: bool = True) -> list[int]:
    """Token ids of ``text``; at a sequence start, led by the tokenizer's BOS exactly once.

    Trailing special tokens (an EOS some tokenizers append) are never added: the text is a
    prompt or a continuation, not a finished document.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not sequence_start:
        return ids
    lead = leading_special_ids(tokenizer)
    if lead and ids[: len(lead)] != lead:
        ids = lead + ids
    return ids
