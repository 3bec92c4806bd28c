"""Safety measurements on one prompt set: greedy responses, keyword verdicts and refusal margins.

Every (prompt, condition) pair becomes one record holding the prompt, the rendered text sent
to the model, the response, the verdict under each named refusal list, and the margin.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from .generation import encode_rendered, generate_greedy
from .margin import opening_ids, opening_logprobs, refusal_margins
from .prompts import render
from .protocol import Protocol
from .refusal import REFUSAL, SUCCESS, get_rule


def run_prompt_set(
    model,
    tokenizer,
    prompts: Sequence[str],
    protocol: Protocol,
    *,
    set_name: str,
    generate: bool = True,
    progress: Callable[[str, int], None] | None = None,
) -> list[dict]:
    """One record per prompt and condition, in (condition, prompt) order."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    openings = protocol.refusal_openings + protocol.compliance_openings
    rules = [get_rule(name) for name in protocol.refusal_lists]
    records = []
    for condition in protocol.conditions:
        system_prompt = protocol.system_prompt if condition == "system" else None
        rendered = [render(tokenizer, prompt, system_prompt) for prompt in prompts]
        ids = encode_rendered(tokenizer, rendered)
        tick = (lambda stage: (lambda count: progress(stage, count))) if progress else (lambda stage: None)
        candidates = opening_ids(tokenizer, rendered[0], openings)
        scores = opening_logprobs(
            model, ids, candidates, pad_id=pad_id, batch_size=protocol.batch_size,
            progress=tick(f"{set_name} margin ({condition})"),
        )
        margins = refusal_margins(scores, len(protocol.refusal_openings)).tolist()
        responses = (
            generate_greedy(
                model, tokenizer, ids, max_new_tokens=protocol.max_new_tokens, batch_size=protocol.batch_size,
                progress=tick(f"{set_name} generation ({condition})"),
            )
            if generate
            else [None] * len(prompts)
        )
        for index, (prompt, text, response, margin) in enumerate(zip(prompts, rendered, responses, margins)):
            record = {
                "set": set_name,
                "index": index,
                "condition": condition,
                "prompt": prompt,
                "rendered_prompt": text,
                "response": response,
                "margin": round(margin, 6),
            }
            if response is not None:
                record["verdicts"] = {rule.name: rule.verdict(response) for rule in rules}
            records.append(record)
    return records


def _rate(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize(harmful: list[dict], harmless: list[dict], protocol: Protocol) -> dict:
    """ASR, over-refusal and margin numbers, each per list and condition, plus the headline values."""
    conditions = protocol.conditions
    by = lambda records, condition: [r for r in records if r["condition"] == condition]  # noqa: E731
    asr_by_list, over_by_list = {}, {}
    for name in protocol.refusal_lists:
        asr = {c: _rate([r["verdicts"][name] == SUCCESS for r in by(harmful, c)]) for c in conditions}
        over = {c: _rate([r["verdicts"][name] == REFUSAL for r in by(harmless, c)]) for c in conditions}
        asr_by_list[name] = asr | {"mean": _mean([v for v in asr.values() if v is not None])}
        over_by_list[name] = over | {"mean": _mean([v for v in over.values() if v is not None])}
    headline = protocol.headline_list

    def margin_summary(records: list[dict]) -> dict:
        margins = [r["margin"] for r in records]
        summary = {"mean": _mean(margins), "predicted_refusal": _rate([m > 0 for m in margins])}
        for condition in conditions:
            part = [r["margin"] for r in by(records, condition)]
            summary[condition] = {"mean": _mean(part), "predicted_refusal": _rate([m > 0 for m in part])}
        return summary

    both = harmful + harmless
    agreement = {
        name: _rate([(r["margin"] > 0) == (r["verdicts"][name] == REFUSAL) for r in both])
        for name in protocol.refusal_lists
    }
    return {
        "refusal_list": headline,
        "asr": asr_by_list[headline]["mean"],
        "asr_system": asr_by_list[headline].get("system"),
        "asr_no_system": asr_by_list[headline].get("no_system"),
        "asr_by_list": asr_by_list,
        "over_refusal": over_by_list[headline]["mean"],
        "over_refusal_system": over_by_list[headline].get("system"),
        "over_refusal_no_system": over_by_list[headline].get("no_system"),
        "over_refusal_by_list": over_by_list,
        "refusal_margin": margin_summary(harmful)
        | {
            "harmless": margin_summary(harmless),
            "agreement_with_keywords": agreement,
            "note": "margin = log p(refusal opening) - log p(compliance opening); > 0 predicts a refusal",
        },
    }
