"""Batched greedy generation with left padding, equal token for token to one-by-one decoding.

Prompts are rendered through the chat template, sorted by length (so little compute goes to
padding), left padded with an attention mask, and decoded greedily. Position ids follow the
attention mask, so a padded row sees the same positions as the prompt run alone. The tokens every
prompt opens with (the system turn) run once: each batch starts from a copy of their cache, and
its padding sits between that prefix and each prompt's own tokens, masked out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from ..devices import input_device
from ..encoding import prompt_text
from ..kv_cache import SharedPrefix, cache_argument
from ..special_tokens import encode_text

logger = logging.getLogger(__name__)


def render_prompts(tokenizer, prompts: Sequence[str], system_prompt: str | None) -> list[str]:
    """The exact text the model sees for each prompt (chat template applied)."""
    return [prompt_text(tokenizer, prompt, system_prompt) for prompt in prompts]


def encode_rendered(tokenizer, rendered: Sequence[str]) -> list[list[int]]:
    # The tokenizer's BOS once: kept where the template already wrote it, added where it did not.
    return [encode_text(tokenizer, text) for text in rendered]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both [len(rows), longest], padded on the left."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            input_ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[index, width - len(row) :] = 1
    return input_ids, attention_mask


def prefixed_batch(
    prefix: SharedPrefix, rows: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole prompts as ``(input_ids, attention_mask)``: the shared prefix, then each row's rest left padded."""
    rest, rest_mask = left_pad([row[prefix.length :] for row in rows], pad_id)
    shared = torch.tensor([prefix.tokens] * len(rows), dtype=torch.long).reshape(len(rows), prefix.length)
    return torch.cat([shared, rest], 1), torch.cat([torch.ones_like(shared), rest_mask], 1)


def _pad_id(tokenizer, model) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, model.generation_config.pad_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _eos_ids(tokenizer, model) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def _until_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    for position, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:position]
    return tokens


def generate_greedy(model, tokenizer, prompt_ids: Sequence[Sequence[int]], **kwargs) -> list[str]:
    """Greedy continuations of already-encoded prompts as text (special tokens dropped), in input order."""
    return [
        tokenizer.decode(tokens, skip_special_tokens=True).strip()
        for tokens in generate_greedy_ids(model, tokenizer, prompt_ids, **kwargs)
    ]


@torch.inference_mode()
def generate_greedy_ids(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    share_prefix: bool = True,
    progress: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """Greedy new token ids of each prompt, cut before the first end-of-sequence token, in input order."""
    pad_id = _pad_id(tokenizer, model)
    eos_ids = _eos_ids(tokenizer, model)
    device = input_device(model)
    order = sorted(range(len(prompt_ids)), key=lambda index: len(prompt_ids[index]))
    results: list[list[int]] = [[] for _ in prompt_ids]
    if not prompt_ids:
        return results
    prefix = SharedPrefix(model, prompt_ids, enabled=share_prefix, extra_tokens=max_new_tokens)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        input_ids, attention_mask = prefixed_batch(prefix, [prompt_ids[index] for index in chunk], pad_id)
        cache = prefix.copies(len(chunk))
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            **({cache_argument(model): cache} if cache is not None else {}),
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            # Unset sampling defaults some checkpoints ship, so greedy decoding raises no warnings.
            temperature=None,
            top_p=None,
            top_k=None,
        )
        new_tokens = output[:, input_ids.shape[1] :].cpu()
        for row, index in enumerate(chunk):
            results[index] = _until_eos(new_tokens[row].tolist(), eos_ids)
        if progress:
            progress(len(chunk))
    return results
