"""Safety while training: the refusal margin on fixed prompts every N steps, and a stop rule.

The margin (``evaluation.margin``: log p(refusal opening) - log p(compliance opening), no text
generated) is measured on harmful calibration prompts, where it should stay high, and on
harmless prompts, where it should stay low (over-refusal). The prompts are rendered and
tokenized once, so every measurement sees the same ids. The first N prompts of each set are
taken: the builtin sets are stored round-robin across categories, so a prefix keeps the spread.
They are calibration sets, never the evaluation prompts, so tracking does not leak into the
final ASR.
"""

from __future__ import annotations

import statistics

from ..data import Dataset
from ..evaluation.generation import encode_rendered
from ..evaluation.margin import opening_ids, opening_logprobs, refusal_margins
from ..evaluation.prompts import render
from ..evaluation.protocol import COMPLIANCE_OPENINGS, REFUSAL_OPENINGS
from .config import FinetuneConfig
from .trainer import autocast_for

TRACK_FILE = "refusal_track.json"


class RefusalTracker:
    """Measures the mean refusal margin of a model on fixed harmful and harmless prompts."""

    def __init__(self, tokenizer, harmful: Dataset, harmless: Dataset, config: FinetuneConfig, batch_size: int = 8):
        self.config = config
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.sets = {}
        for key, dataset in (("harmful", harmful), ("harmless", harmless)):
            subset = dataset.take(config.track_prompts)
            rendered = [render(tokenizer, example.prompt, config.system_prompt) for example in subset.examples]
            if not rendered:
                raise ValueError(f"the tracking set {dataset.name} has no prompt")
            self.sets[key] = (subset, encode_rendered(tokenizer, rendered))
        first = render(tokenizer, harmful.examples[0].prompt, config.system_prompt)
        self.candidates = opening_ids(tokenizer, first, REFUSAL_OPENINGS + COMPLIANCE_OPENINGS)
        self.stop: dict | None = None

    def describe(self) -> dict:
        """What is tracked, for the run's record."""
        return {
            "every": self.config.track_every,
            "stop_if_refusal_below": self.config.stop_if_refusal_below,
            "refusal_openings": list(REFUSAL_OPENINGS),
            "compliance_openings": list(COMPLIANCE_OPENINGS),
            **{
                key: {"name": subset.name, "sha256": subset.sha256, "prompts": len(ids)}
                for key, (subset, ids) in self.sets.items()
            },
        }

    def measure(self, model) -> dict:
        """``refusal_margin`` (harmful, mean) and ``over_refusal_margin`` (harmless, mean), and the share > 0."""
        was_training = model.training
        model.eval()  # no dropout: the same weights give the same margin
        device = next(model.parameters()).device
        values = {}
        try:
            with autocast_for(device, self.config):
                for key, (_, ids) in self.sets.items():
                    scores = opening_logprobs(
                        model, ids, self.candidates, pad_id=self.pad_id, batch_size=self.batch_size
                    )
                    margins = refusal_margins(scores, len(REFUSAL_OPENINGS)).tolist()
                    prefix = "refusal" if key == "harmful" else "over_refusal"
                    values[f"{prefix}_margin"] = round(statistics.fmean(margins), 6)
                    values[f"{prefix}_predicted"] = sum(m > 0 for m in margins) / len(margins)
        finally:
            model.train(was_training)
        return values

    def should_stop(self, step: int, values: dict) -> bool:
        """Apply the stop rule to a measurement; remember why and when the run stopped."""
        threshold = self.config.stop_if_refusal_below
        if threshold is None or values["refusal_margin"] >= threshold:
            return False
        self.stop = {
            "reason": "refusal_margin_below",
            "step": step,
            "refusal_margin": values["refusal_margin"],
            "threshold": threshold,
        }
        return True
