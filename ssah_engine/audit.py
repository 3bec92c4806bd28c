"""Audit a model: score every unit on a safety and a utility set, then label it.

``run_audit`` is the one function the CLI and the worker call; a reader can follow an audit
from here top to bottom.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


from .architectures import describe
from .classes import Cuts
from .classify import classify
from .data import Dataset
from .encoding import RESPONSE_TOKENS, encode_pairs, make_batches
from .loading import LoadedModel
from .scoring import METHODS, score_dataset
from .scoring.stats import ESTIMATORS
from .self_responses import self_calibration
from .unitmap import UnitMap
from .units import UnitSpace

logger = logging.getLogger(__name__)

SAMPLINGS = ("shuffle", "first")
RESPONSES = ("dataset", "self")

# (stage, fraction of the whole audit done in [0, 1])
ProgressFn = Callable[[str, float], None]


@dataclass(frozen=True)
class AuditConfig:
    """Settings of one audit; saved in the unit map so the run can be reproduced."""

    method: str = field(default="wifv", metadata={"help": "importance score: wifv (paper), wanda or snip"})
    samples: int = field(default=128, metadata={"help": "pairs taken from each calibration set (paper: 128)"})
    cuts: Cuts = field(default_factory=Cuts, metadata={"help": "parameter fractions of RU, SCU, UCU"})
    max_length: int = field(default=512, metadata={"help": "tokens per pair; longer responses are cut"})
    batch_size: int = field(default=8, metadata={"help": "pairs per forward pass"})
    system_prompt: str | None = field(default=None, metadata={"help": "system message for the chat template"})
    sampling: str = field(
        default="shuffle",
        metadata={"help": "shuffle: a seeded random sample, as the authors drew it (shuffle(seed).select(range(N))); "
                  "first: the first N pairs"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the shuffled sample (authors: 0)"})
    estimator: str = field(
        default="pooled",
        metadata={"help": "activation variance: pooled (over all response tokens) or flap (the authors' running "
                  "update, quirks included; wifv only)"},
    )
    response_tokens: str = field(
        default="template",
        metadata={"help": "tokens scored: template (the assistant turn as the template writes it, end-of-turn "
                  "marker and newline included) or content (the response's own words)"},
    )
    responses: str = field(
        default="dataset",
        metadata={"help": "dataset: score the sets' written responses; self: the model's own greedy answers "
                  "(its refusals of the harmful prompts, its non-refusals of the benign ones)"},
    )
    self_response_tokens: int = field(default=64, metadata={"help": "new tokens per own answer in self mode"})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {self.estimator!r}")
        if self.estimator == "flap" and self.method != "wifv":
            raise ValueError(f"the flap estimator serves method wifv only, not {self.method!r}")
        if self.response_tokens not in RESPONSE_TOKENS:
            raise ValueError(f"response_tokens must be one of {', '.join(RESPONSE_TOKENS)}, got {self.response_tokens!r}")
        if self.responses not in RESPONSES:
            raise ValueError(f"responses must be one of {', '.join(RESPONSES)}, got {self.responses!r}")
        if self.self_response_tokens < 1:
            raise ValueError(f"self_response_tokens must be at least 1, got {self.self_response_tokens}")

    def to_dict(self) -> dict:
        return asdict(self)


def _calibration_subset(dataset: Dataset, config: AuditConfig) -> Dataset:
    """The pairs an audit scores: a seeded sample (the authors' draw) or the first N."""
    if config.sampling == "shuffle":
        return dataset.sample(config.samples, config.seed)
    return dataset.take(config.samples)


def run_audit(
    loaded: LoadedModel,
    safety: Dataset,
    utility: Dataset,
    config: AuditConfig = AuditConfig(),
    progress: ProgressFn | None = None,
) -> UnitMap:
    """Score ``loaded.model`` on both sets and return its unit map."""
    model, tokenizer = loaded.model, loaded.tokenizer
    layout = describe(model)
    space = UnitSpace.from_layout(layout)
    data_used = {}
    scores = {}
    safety, utility = _calibration_subset(safety, config), _calibration_subset(utility, config)
    self_report = None
    if config.responses == "self":  # the same sampled prompts, answered in the model's own words
        calibration = self_calibration(loaded, safety, utility, system_prompt=config.system_prompt,
                                       max_new_tokens=config.self_response_tokens, batch_size=config.batch_size)
        safety, utility, self_report = calibration.safety, calibration.utility, calibration.report
    for stage, (name, subset) in enumerate((("safety", safety), ("utility", utility))):
        pairs = [(example.prompt, example.response) for example in subset.examples if example.response]
        if not pairs:
            raise ValueError(f"the {name} set {subset.name} has no (prompt, response) pairs")
        encoded = encode_pairs(tokenizer, pairs, max_length=config.max_length, system_prompt=config.system_prompt,
                               response_tokens=config.response_tokens)
        if not encoded:
            raise ValueError(f"every prompt of the {name} set is longer than max_length={config.max_length}")
        logger.info("scoring %d %s pairs (%s)", len(encoded), name, config.method)

        def report(done: int, total: int, stage=stage, name=name) -> None:
            if progress:
                progress(f"scoring {name} set", (stage + done / total) / 2)

        scores[name] = score_dataset(
            model,
            layout,
            # flap's running update depends on the order: the sampled order, as the authors fed it
            make_batches(encoded, config.batch_size, tokenizer.pad_token_id, sort=config.estimator != "flap"),
            method=config.method,
            estimator=config.estimator,
            progress=report,
        )
        data_used[name] = {
            "name": subset.name,
            "sha256": subset.sha256,
            "sampling": config.sampling,
            "seed": config.seed if config.sampling == "shuffle" else None,
            "pairs": len(encoded),
            "response_tokens": scores[name].tokens,
        }

    if self_report is not None:
        data_used["self_responses"] = self_report
    labels = classify(scores["safety"].scores, scores["utility"].scores, space.param_weights(), config.cuts)
    unit_map = UnitMap(
        space=space,
        labels=labels,
        z_safety=scores["safety"].scores,
        z_utility=scores["utility"].scores,
        head_input_mean=scores["safety"].head_input_mean.float(),
        neuron_input_mean=scores["safety"].neuron_input_mean.float(),
        utility_head_input_mean=scores["utility"].head_input_mean.float(),
        utility_neuron_input_mean=scores["utility"].neuron_input_mean.float(),
        layers_path=layout.layers_path,
        config=config.to_dict(),
        model={
            "source": loaded.source,
            "resolved": loaded.resolved,
            "family": layout.family,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        },
        data=data_used,
    )
    if progress:
        progress("classified", 1.0)
    return unit_map
