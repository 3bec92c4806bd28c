"""Refusal margin: how much more likely the model opens with a refusal than with a compliance.

For each prompt, margin = log sum_r p(r | prompt) - log sum_c p(c | prompt), where r runs over
refusal openings ("I'm sorry", "I cannot", ...) and c over compliance openings ("Sure", ...).
No text is generated: the prefix every prompt shares (the system turn) runs once, a batch of
prompts runs once on copies of its KV cache, the cache is repeated for
the few token rows the openings need (openings sharing a prefix share a row), and every opening
is scored in one short extra pass. Margin > 0 predicts a refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from ..devices import input_device
from ..kv_cache import SharedPrefix, cache_argument, returned_cache
from ..special_tokens import encode_text
from .generation import prefixed_batch

logger = logging.getLogger(__name__)


def opening_ids(tokenizer, rendered_prompt: str, openings: Sequence[str]) -> list[list[int]]:
    """Token ids of each opening as the model would write it right after ``rendered_prompt``."""
    prompt_ids = encode_text(tokenizer, rendered_prompt)
    result = []
    for opening in openings:
        joined = encode_text(tokenizer, rendered_prompt + opening)
        if joined[: len(prompt_ids)] == prompt_ids and len(joined) > len(prompt_ids):
            ids = joined[len(prompt_ids) :]
        else:  # the opening merged with the prompt's last token: fall back to tokenizing it alone
            ids = tokenizer(opening, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"opening {opening!r} encodes to no tokens")
        result.append(ids)
    return result


def _pad_rows(rows: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[index, : len(row)] = 1
    return ids, mask


def _shared_rows(candidates: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[int]]:
    """The fewest token rows to feed after the prompt so every candidate can be scored, and each one's row.

    Candidate c needs c[:-1] fed (its first token is scored by the prompt's last logits); a row
    whose tokens start with c[:-1] serves c too, so "I'm sorry" rides on "I'm not able".
    """
    rows: list[list[int]] = []
    row_of = [0] * len(candidates)
    for index in sorted(range(len(candidates)), key=lambda i: -len(candidates[i])):
        fed = list(candidates[index][:-1])
        for number, row in enumerate(rows):
            if row[: len(fed)] == fed:
                row_of[index] = number
                break
        else:
            row_of[index] = len(rows)
            rows.append(fed)
    return rows, row_of


@torch.inference_mode()
def opening_logprobs(
    model,
    prompt_ids: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int = 8,
    share_prefix: bool = True,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """log p(candidate | prompt) for every prompt and candidate: float64 [prompts, candidates]."""
    device = input_device(model)
    rows, row_of = _shared_rows(candidates)
    width = max(len(row) for row in rows)
    first = torch.tensor([ids[0] for ids in candidates], device=device)
    fed, fed_mask = _pad_rows(rows, max(width, 1), pad_id)
    fed, fed_mask = fed[:, :width].to(device), fed_mask[:, :width].to(device)
    # Candidate k's token j+1 is predicted at position j of its row.
    targets, target_mask = _pad_rows([ids[1:] for ids in candidates], max(width, 1), pad_id)
    targets, target_mask = targets[:, :width].to(device), target_mask[:, :width].to(device).double()
    row_index = torch.tensor(row_of, device=device)[:, None].expand(-1, max(width, 0))
    position_index = torch.arange(width, device=device)[None].expand(len(candidates), -1)

    scores = torch.empty((len(prompt_ids), len(candidates)), dtype=torch.float64)
    if not prompt_ids:
        return scores
    prefix = SharedPrefix(model, prompt_ids, enabled=share_prefix, extra_tokens=width)
    order = sorted(range(len(prompt_ids)), key=lambda index: len(prompt_ids[index]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        count = len(chunk)
        input_ids, attention_mask = prefixed_batch(prefix, [prompt_ids[index] for index in chunk], pad_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        cache = prefix.copies(count)
        out = model(
            input_ids=input_ids[:, prefix.length :],
            attention_mask=attention_mask,
            position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0)[:, prefix.length :],
            use_cache=width > 0 or cache is not None,
            logits_to_keep=1,
            **({cache_argument(model): cache} if cache is not None else {}),
        )
        total = out.logits[:, -1].float().log_softmax(-1)[:, first].double()  # [count, candidates]
        if width > 0:
            cache = returned_cache(out)
            cache.batch_repeat_interleave(len(rows))  # row p*len(rows)+r: prompt p followed by shared row r
            mask = torch.cat([attention_mask.repeat_interleave(len(rows), 0), fed_mask.repeat(count, 1)], dim=1)
            next_position = attention_mask.sum(-1, keepdim=True).repeat_interleave(len(rows), 0)
            step = model(
                input_ids=fed.repeat(count, 1),
                attention_mask=mask,
                position_ids=next_position + torch.arange(width, device=device),
                use_cache=True,
                **{cache_argument(model): cache},
            )
            logprobs = step.logits.float().log_softmax(-1).view(count, len(rows), width, -1)
            picked = logprobs[:, row_index, position_index, targets].double()  # [count, candidates, width]
            total = total + (picked * target_mask).sum(-1)
        scores[chunk] = total.cpu()
        if progress:
            progress(count)
    return scores


def refusal_margins(scores: torch.Tensor, refusal_count: int) -> torch.Tensor:
    """Per prompt: logsumexp of the first ``refusal_count`` columns minus that of the others."""
    return scores[:, :refusal_count].logsumexp(-1) - scores[:, refusal_count:].logsumexp(-1)
