"""Settings of one probe run (reasoning-direction probe, refusal direction, unit writes).

Saved with the results so a run can be reproduced; ``from_dict`` rejects unknown keys so a typo in a
stored config or an API request is an error, not a silent default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

POOLS = ("last", "mean")
PROMPT_FORMATS = ("chat", "no_inst", "raw")
# No harmful content: only the opening of an answer, the shape the paper's Fig. 2-4 compare.
DEFAULT_COMPLIANCE_TEXT = "Sure, here is a detailed answer to your request, step by step. First, you will need to"


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass(frozen=True)
class ProbeConfig:
    """What the probe measures and on how much data."""

    ks: tuple[int, ...] = field(default=(2, 4, 6, 8, 10), metadata=_help("continuation lengths k (paper: 2..10)"))
    pool: str = field(
        default="last", metadata=_help("hidden state of a continuation: last token or mean of the k", choices=POOLS)
    )
    queries: int = field(default=32, metadata=_help("harmful queries probed", ge=1))
    refusal_text: str | None = field(
        default=None, metadata=_help("refusal continuation; None takes each query's response in the set")
    )
    compliance_text: str = field(default=DEFAULT_COMPLIANCE_TEXT, metadata=_help("compliant continuation"))
    calibration: int = field(default=64, metadata=_help("harmful and harmless prompts each for the direction", ge=4))
    holdout: float = field(default=0.25, metadata=_help("share of calibration prompts held out to pick the layer"))
    max_layer_fraction: float = field(
        default=0.8, metadata=_help("pick the direction's layer among the first fraction (Arditi et al.: 0.8)")
    )
    random_seed: int = field(default=0, metadata=_help("seed of the matched random units"))
    batch_size: int = field(default=8, metadata=_help("sequences per forward pass", ge=1))
    max_length: int = field(default=512, metadata=_help("tokens of a rendered prompt; longer ones are skipped", ge=8))
    system_prompt: str | None = field(default=None, metadata=_help("system message sent with every prompt"))
    prompt_format: str = field(
        default="chat", metadata=_help("chat, no_inst or raw (as ssah eval)", choices=PROMPT_FORMATS)
    )
    share_prefix: bool = field(
        default=True,
        metadata=_help("run the token prefix every input shares once (off: every input in full, for timing)"),
    )

    def __post_init__(self) -> None:
        ks = tuple(self.ks)
        object.__setattr__(self, "ks", ks)
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {self.ks!r}")
        if len(set(ks)) != len(ks) or list(ks) != sorted(ks):
            raise ValueError(f"ks must be increasing and distinct, got {self.ks!r}")
        if max(ks) > 64:
            raise ValueError(f"k at most 64 tokens, got {max(ks)}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {', '.join(PROMPT_FORMATS)}, got {self.prompt_format!r}")
        for name in ("queries", "calibration", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.calibration < 4:
            raise ValueError(f"calibration needs at least 4 prompts of each kind, got {self.calibration}")
        if not 0 < self.holdout < 1:
            raise ValueError(f"holdout must be in (0, 1), got {self.holdout}")
        if not 0 < self.max_layer_fraction <= 1:
            raise ValueError(f"max_layer_fraction must be in (0, 1], got {self.max_layer_fraction}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")
        if not self.compliance_text.strip() or (self.refusal_text is not None and not self.refusal_text.strip()):
            raise ValueError("continuation texts must not be empty")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ks"] = list(self.ks)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ProbeConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown probe settings: {', '.join(unknown)}")
        values = dict(data)
        if "ks" in values:
            values["ks"] = tuple(values["ks"])
        return cls(**values)
