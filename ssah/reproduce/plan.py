"""Settings of one `ssah reproduce` run: the default preset (sized for 2 CPU cores) and `--quick`.

Every number that changes a result lives here and is saved in results.json, so a run can be
repeated exactly. Nothing here is tuned towards the paper's numbers: the sizes are what fits
the machine, and the learning rates are ordinary SFT values for a 135M model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

# Datasets (builtin:NAME, see ssah_engine/data/builtin/README.md). The evaluation sets are never
# trained or calibrated on; tests/engine/test_reproduce.py checks that they share no prompt with
# the training and calibration sets below.
SAFETY_SET = "builtin:safety"  # calibration (z_S)
UTILITY_SET = "builtin:utility"  # calibration (z_U); also finds RU for the alignment budget
REFUSAL_SET = "builtin:align_refusal"  # alignment SFT: harmful requests with refusals
BENIGN_SET = "builtin:benign_sft"  # split: the first part is mixed into alignment, the rest is downstream data
HARMFUL_EVAL = "builtin:harmful_eval"
HARMLESS_EVAL = "builtin:harmless_eval"
BENIGN_TEXT = "builtin:benign_text"  # perplexity
TRAINING_SETS = (SAFETY_SET, UTILITY_SET, REFUSAL_SET, BENIGN_SET)
EVALUATION_SETS = (HARMFUL_EVAL, HARMLESS_EVAL, BENIGN_TEXT)
# Builtins that were safety-aligned by their makers: the run audits them as shipped (no stage 2).
ALIGNED_BUILTINS = ("builtin:qwen2.5-coder-0.5b",)


def _help(text: str) -> dict:
    return {"help": text}


# Opt-in settings: absent from to_dict (and the hash) while at these defaults.
OPT_IN = {"lora_rank": 0, "lora_lr": None}


@dataclass(frozen=True)
class Plan:
    """What `ssah reproduce` runs; `Plan()` is the default preset, `Plan.quick()` the smoke preset."""

    model: str = field(default="builtin:smollm2", metadata=_help("the pre-trained model to align and audit"))
    aligned_as_shipped: bool = field(
        default=False, metadata=_help("the model is already safety-aligned: skip stage 2 and audit it as shipped")
    )
    preset: str = field(default="default", metadata=_help("name of the preset these settings came from"))
    seed: int = field(default=0, metadata=_help("seed of data order and everything random"))
    # evaluation (one protocol for every model of the run)
    eval_samples: int = field(default=24, metadata=_help("harmful and harmless evaluation prompts (paper: 100)"))
    max_new_tokens: int = field(default=40, metadata=_help("greedy new tokens per response (paper: 256)"))
    eval_batch_size: int = field(default=24, metadata=_help("prompts per generation batch"))
    benign_text_limit: int | None = field(
        default=None, metadata=_help("paragraphs scored for perplexity (None: all 60)")
    )
    # ablation (stage 4, the paper's Table 1): every format x compensation, each class and matched random controls
    prompt_formats: tuple[str, ...] = field(
        default=("chat", "no_inst"), metadata=_help("prompt formats of Table 1 (paper: no_inst)")
    )
    compensations: tuple[str, ...] = field(
        default=("none", "safety"), metadata=_help("what replaces ablated units (paper: safety)")
    )
    controlled_classes: tuple[str, ...] = field(
        default=("SCU", "RU"), metadata=_help("classes that get a matched random control")
    )
    control_seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=_help("seeds of each random control"))
    # audit
    audit_samples: int = field(default=64, metadata=_help("pairs of each calibration set (paper: 128)"))
    audit_batch_size: int = field(default=8, metadata=_help("pairs per scoring pass"))
    # alignment SFT (stage 2)
    align_refusals: int = field(default=120, metadata=_help("refusal pairs of builtin:align_refusal"))
    align_benign: int = field(default=60, metadata=_help("first N pairs of builtin:benign_sft mixed into alignment"))
    align_epochs: int = field(default=2, metadata=_help("alignment epochs (both arms)"))
    align_lr: float = field(default=1e-4, metadata=_help("alignment peak learning rate (both arms)"))
    budget: float = field(default=0.20, metadata=_help("alignment budget: parameter fraction of RU trained"))
    lora_rank: int = field(
        default=0,
        metadata=_help(
            "alignment: also train a LoRA-RU arm (safety-aware LoRA of this rank, update zero outside RU) "
            "on the budget arm's data, RU and steps (0: off)"
        ),
    )
    lora_lr: float | None = field(default=None, metadata=_help("the LoRA-RU arm's peak learning rate (None: align_lr)"))
    # downstream fine-tuning (stage 5)
    downstream_pairs: int = field(default=90, metadata=_help("benign_sft pairs after the alignment ones"))
    downstream_epochs: int = field(default=2, metadata=_help("downstream epochs (all three arms alike)"))
    downstream_lr: float = field(default=1e-4, metadata=_help("downstream peak learning rate (the alignment's)"))
    cu_top: float = field(default=0.06, metadata=_help("setting (i): parameter fraction of CU frozen (paper: 6 %)"))
    paper_schedule: bool = field(
        default=False,
        metadata=_help(
            "downstream: the paper's schedule (freeze arms twice the epochs, setting (i) "
            "after one epoch of (ii)) instead of equal epochs"
        ),
    )
    # shared training settings
    batch_size: int = field(default=8, metadata=_help("pairs per optimizer step"))
    max_length: int = field(default=384, metadata=_help("tokens per training pair"))
    max_steps: int | None = field(default=None, metadata=_help("cap on optimizer steps per fine-tune (quick preset)"))

    def __post_init__(self) -> None:
        for name in ("prompt_formats", "compensations", "controlled_classes", "control_seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.prompt_formats or not self.compensations:
            raise ValueError("prompt_formats and compensations need at least one entry each")
        for name in (
            "eval_samples",
            "max_new_tokens",
            "eval_batch_size",
            "audit_samples",
            "audit_batch_size",
            "align_refusals",
            "align_epochs",
            "downstream_pairs",
            "downstream_epochs",
            "batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.align_benign < 0:
            raise ValueError(f"align_benign must be 0 or more, got {self.align_benign}")
        if not 0.0 < self.budget <= 1.0:
            raise ValueError(f"budget must be a fraction in (0, 1], got {self.budget}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be positive or None, got {self.max_steps}")
        if self.lora_rank < 0 or (self.lora_lr is not None and (not self.lora_rank or self.lora_lr <= 0)):
            raise ValueError(
                f"need lora_rank >= 0 and lora_lr > 0 only with lora_rank, got {self.lora_rank}, {self.lora_lr}"
            )

    @classmethod
    def quick(cls, **changes) -> Plan:
        """A smoke run: every stage and every file, a few prompts and steps each (minutes on SmolLM2)."""
        small = {
            "preset": "quick",
            "eval_samples": 4,
            "max_new_tokens": 32,
            "eval_batch_size": 4,
            "benign_text_limit": 8,
            "audit_samples": 8,
            "align_refusals": 8,
            "align_benign": 4,
            "align_epochs": 1,
            "downstream_pairs": 8,
            "downstream_epochs": 1,
            "batch_size": 4,
            "max_length": 256,
            "max_steps": 2,
            "prompt_formats": ("chat", "no_inst"),
            "compensations": ("none", "safety"),
            "control_seeds": (0,),
        }
        return cls(**{**small, **changes})

    def replace(self, **changes) -> Plan:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        """The settings; opt-in fields added after runs were published are left out at their defaults, so
        those runs keep their plan hash."""
        values = asdict(self)
        for name, default in OPT_IN.items():
            if values[name] == default:
                del values[name]
        return values

    @property
    def hash(self) -> str:
        """sha256 of the settings; a stage's saved outputs are reused only under the same hash."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
