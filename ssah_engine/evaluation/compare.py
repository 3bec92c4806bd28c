"""Two evaluations on the same prompts, side by side: each rate's change with a paired bootstrap interval."""

from __future__ import annotations

from .intervals import paired_bootstrap
from .protocol import Protocol
from .refusal import REFUSAL, SUCCESS
from .safety import per_prompt

# outcome name -> (prompt set, per-record outcome under the headline list)
OUTCOMES = {
    "asr": ("harmful", lambda record, rule: record["verdicts"][rule] == SUCCESS),
    "refusal_openings_harmful": ("harmful", lambda record, rule: record["opens_with_refusal"]),
    "over_refusal": ("harmless", lambda record, rule: record["verdicts"][rule] == REFUSAL),
    "refusal_openings_harmless": ("harmless", lambda record, rule: record["opens_with_refusal"]),
}


def compare(before: dict, after: dict, *, resamples: int = 2000, seed: int = 0) -> dict:
    """``after - before`` for every outcome and condition the two evaluation results share.

    Both must come from comparable protocols except for what is being compared (an ablation, a
    fine-tune), so prompts are paired by index: the sets must hold the same prompts in the same order.
    """
    settings = [Protocol.from_dict(result["protocol"]["settings"]) for result in (before, after)]
    for name in ("harmful", "harmless"):
        hashes = {getattr(protocol, name).sha256 for protocol in settings}
        if len(hashes) != 1:
            raise ValueError(f"the two evaluations used different {name} prompts; a paired comparison needs the same")
    rule = settings[0].headline_list
    conditions = [c for c in settings[0].conditions if c in settings[1].conditions]
    differences: dict[str, dict] = {}
    for outcome, (set_name, test) in OUTCOMES.items():
        per_condition = {}
        for condition in conditions:
            if condition == "suffix" and set_name == "harmless":
                continue
            a, b = (
                per_prompt(result["records"][set_name], condition, lambda r: test(r, rule))
                for result in (before, after)
            )
            if a and len(a) == len(b):
                per_condition[condition] = paired_bootstrap(a, b, resamples=resamples, seed=seed)
        differences[outcome] = per_condition
    return {
        "refusal_list": rule,
        "conditions": conditions,
        "differences": differences,
        "note": "after - before per prompt; 95 % paired bootstrap interval over prompts",
    }
