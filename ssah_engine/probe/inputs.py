"""The probe's token sequences: a rendered query followed by a refusal or a compliant continuation.

One sequence ``query + first K continuation tokens`` (K the largest k) holds every input of the
paper's probe for that continuation: causal attention makes the state at ``query_end + k - 1`` the
state of the input ``query + k tokens``, and the state at ``query_end - 1`` that of the query alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..evaluation.prompts import render
from ..special_tokens import encode_text


@dataclass(frozen=True)
class ProbeInput:
    """One query's two sequences; both start with the same ``query_length`` tokens."""

    prompt: str
    query_length: int
    refusal: tuple[int, ...]
    compliance: tuple[int, ...]


def prompt_ids(tokenizer, prompt: str, config) -> list[int]:
    """Token ids of ``prompt`` rendered as the model sees it before answering."""
    return encode_text(tokenizer, render(tokenizer, prompt, config.system_prompt, config.prompt_format))


def continuation_ids(tokenizer, rendered: str, query: list[int], text: str) -> list[int]:
    """Ids of ``text`` written right after the rendered prompt (tokenized alone if it merges with it)."""
    joined = encode_text(tokenizer, rendered + text)
    if joined[: len(query)] == query and len(joined) > len(query):
        return joined[len(query) :]
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def build_inputs(tokenizer, queries: list[tuple[str, str | None]], config) -> list[ProbeInput]:
    """Probe inputs for (prompt, response) queries; the refusal is ``config.refusal_text`` or the response.

    Queries longer than ``max_length`` or whose continuation is shorter than the largest k are skipped.
    """
    need = max(config.ks)
    built = []
    for prompt, response in queries:
        refusal_text = config.refusal_text if config.refusal_text is not None else response
        if not refusal_text:
            raise ValueError(f"query {prompt[:60]!r} has no response to use as its refusal; set refusal_text")
        rendered = render(tokenizer, prompt, config.system_prompt, config.prompt_format)
        query = encode_text(tokenizer, rendered)
        if len(query) + need > config.max_length:
            continue
        refusal = continuation_ids(tokenizer, rendered, query, refusal_text)[:need]
        compliance = continuation_ids(tokenizer, rendered, query, config.compliance_text)[:need]
        if len(refusal) < need or len(compliance) < need:
            continue
        built.append(ProbeInput(prompt, len(query), tuple(query + refusal), tuple(query + compliance)))
    return built
