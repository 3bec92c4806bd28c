"""Settings of one audit, saved in the unit map so the run can be reproduced.

Torch-free, like every job config: the command line and the API schemas are built from its fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .classes import Cuts

METHODS = ("wifv", "wanda", "snip")
SAMPLINGS = ("shuffle", "first")
ESTIMATORS = ("pooled", "flap")
RESPONSE_TOKENS = ("template", "content")
RESPONSES = ("dataset", "self")


@dataclass(frozen=True)
class AuditConfig:
    """Settings of one audit; saved in the unit map so the run can be reproduced."""

    method: str = field(
        default="wifv", metadata={"help": "importance score: wifv (paper), wanda or snip", "choices": METHODS}
    )
    samples: int = field(default=128, metadata={"help": "pairs taken from each calibration set (paper: 128)", "ge": 1})
    cuts: Cuts = field(
        default_factory=Cuts, metadata={"help": "parameter fractions of RU, SCU, UCU (e.g. 0.10,0.01,0.10)"}
    )
    max_length: int = field(default=512, metadata={"help": "tokens per pair; longer responses are cut", "ge": 8})
    batch_size: int = field(default=8, metadata={"help": "pairs per forward pass", "ge": 1})
    system_prompt: str | None = field(default=None, metadata={"help": "system message for the chat template"})
    sampling: str = field(
        default="shuffle",
        metadata={
            "help": "shuffle: a seeded random sample, as the authors drew it (shuffle(seed).select(range(N))); "
            "first: the first N pairs",
            "choices": SAMPLINGS,
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the shuffled sample (authors: 0)", "ge": 0})
    estimator: str = field(
        default="pooled",
        metadata={
            "help": "activation variance: pooled (over all response tokens) or flap (the authors' running "
            "update, quirks included; wifv only)",
            "choices": ESTIMATORS,
        },
    )
    response_tokens: str = field(
        default="template",
        metadata={
            "help": "tokens scored: template (the assistant turn as the template writes it, end-of-turn "
            "marker and newline included) or content (the response's own words)",
            "choices": RESPONSE_TOKENS,
        },
    )
    responses: str = field(
        default="dataset",
        metadata={
            "help": "dataset: score the sets' written responses; self: the model's own greedy answers "
            "(its refusals of the harmful prompts, its non-refusals of the benign ones)",
            "choices": RESPONSES,
        },
    )
    self_response_tokens: int = field(default=64, metadata={"help": "new tokens per own answer in self mode", "ge": 1})
    stream_layers: bool = field(
        default=False,
        metadata={
            "help": "hold one decoder layer in memory at a time, read from the checkpoint's safetensors shards "
            "(a local directory; wifv or wanda, dataset responses): the same unit map as the whole-model audit"
        },
    )

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
            raise ValueError(
                f"response_tokens must be one of {', '.join(RESPONSE_TOKENS)}, got {self.response_tokens!r}"
            )
        if self.responses not in RESPONSES:
            raise ValueError(f"responses must be one of {', '.join(RESPONSES)}, got {self.responses!r}")
        if self.stream_layers and self.method == "snip":
            raise ValueError("stream_layers scores wifv or wanda; snip backpropagates through the whole model")
        if self.stream_layers and self.responses == "self":
            raise ValueError(
                "stream_layers needs the sets' written responses; responses='self' generates with the whole model"
            )
        if self.self_response_tokens < 1:
            raise ValueError(f"self_response_tokens must be at least 1, got {self.self_response_tokens}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "AuditConfig":
        """A config from user settings (CLI flags, an API body, a stored job): unknown keys are errors."""
        unknown = set(values) - {item.name for item in fields(cls)}
        if unknown:
            raise ValueError(f"unknown audit settings: {', '.join(sorted(unknown))}")
        values = dict(values)
        if isinstance(values.get("cuts"), dict):
            values["cuts"] = Cuts(**values["cuts"])
        return cls(**values)
