"""Calibration on the model's own words: its greedy answers replace the written responses.

The authors' safety set pairs AdvBench prompts with Llama-2-7B-Chat's own refusals. Written
refusals ("Sorry, I can't help with thing 3.") differ from what an aligned model says ("I'm sorry,
but I can't assist with that."), and the scores follow the tokens scored. In self mode the model
answers every calibration prompt greedily; its refusals of the harmful prompts form the safety set
and its non-refusals of the benign prompts the utility set. Counts, texts and the detector are
recorded in the unit map.
"""

from __future__ import annotations

from dataclasses import dataclass

from .data import Dataset, Example
from .evaluation.generation import encode_rendered, generate_greedy
from .evaluation.prompts import render
from .evaluation.protocol import REFUSAL_OPENINGS
from .evaluation.refusal import opens_with


@dataclass(frozen=True)
class SelfCalibration:
    safety: Dataset
    utility: Dataset
    report: dict


def _answers(loaded, dataset: Dataset, system_prompt: str | None, max_new_tokens: int, batch_size: int) -> list[str]:
    rendered = [render(loaded.tokenizer, example.prompt, system_prompt) for example in dataset.examples]
    ids = encode_rendered(loaded.tokenizer, rendered)
    return generate_greedy(loaded.model, loaded.tokenizer, ids, max_new_tokens=max_new_tokens, batch_size=batch_size)


def self_calibration(
    loaded,
    safety: Dataset,
    utility: Dataset,
    *,
    system_prompt: str | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    openings: tuple[str, ...] = REFUSAL_OPENINGS,
) -> SelfCalibration:
    """Both calibration sets rebuilt from the model's own greedy answers; refusals decided by ``openings``."""
    was_training = loaded.model.training
    loaded.model.eval()
    try:
        harmful_answers = _answers(loaded, safety, system_prompt, max_new_tokens, batch_size)
        benign_answers = _answers(loaded, utility, system_prompt, max_new_tokens, batch_size)
    finally:
        loaded.model.train(was_training)
    refusals = [Example(e.prompt, a) for e, a in zip(safety.examples, harmful_answers) if a and opens_with(a, openings)]
    answers = [
        Example(e.prompt, a) for e, a in zip(utility.examples, benign_answers) if a and not opens_with(a, openings)
    ]
    if not refusals:
        raise ValueError(
            f"self-response calibration: the model refused none of the {len(safety)} harmful prompts of {safety.name}, "
            "so there is no safety set in its own words; use the written responses"
        )
    if not answers:
        raise ValueError(
            f"self-response calibration: the model refused all {len(utility)} benign prompts of {utility.name}"
        )
    report = {
        "mode": "self",
        "detector": {"kind": "refusal-openings", "openings": list(openings)},
        "max_new_tokens": max_new_tokens,
        "safety": {"prompts": len(safety), "kept_refusals": len(refusals)},
        "utility": {"prompts": len(utility), "kept_answers": len(answers)},
        "safety_texts": [[e.prompt, e.response] for e in refusals],
        "utility_texts": [[e.prompt, e.response] for e in answers],
    }
    return SelfCalibration(
        Dataset(f"{safety.name} (self)", tuple(refusals)), Dataset(f"{utility.name} (self)", tuple(answers)), report
    )
