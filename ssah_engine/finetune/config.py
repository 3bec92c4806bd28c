"""Settings of one masked fine-tuning run; saved as ``finetune_config.json`` with its results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..classes import canonical_class

MODES = ("full", "freeze", "budget")
FREEZE_RULES = ("function", "rows")  # see masks.build_masks
SETTINGS = {"i": None, "ii": ("SCU", "CU")}  # setting (i) is SCU + the top of CU, see cu_top
SCHEDULES = ("cosine", "linear", "constant")
CU_TOP_OF = ("model", "cu")
# Named bundles of settings, measured on the aligned builtin (docs/finetune.md, "Keeping the refusals").
PRESETS = {
    # Setting (ii) with embeddings, norms and LM head frozen, and 10 refusal pairs in the benign mix.
    "keep-refusals": {
        "mode": "freeze",
        "setting": "ii",
        "train_embeddings": False,
        "train_norms": False,
        "train_lm_head": False,
        "mix_data": "builtin:align_refusal",
        "mix_pairs": 10,
    },
}


def parse_layer_range(text: str) -> tuple[int, ...]:
    """``"0-5,10"`` -> (0, 1, 2, 3, 4, 5, 10); an empty string gives ()."""
    layers: set[int] = set()
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        try:
            if "-" in part:
                first, last = (int(end) for end in part.split("-", 1))
            else:
                first = last = int(part)
        except ValueError:
            raise ValueError(f"layer range must look like '0-5,10', got {text!r}") from None
        if first < 0 or last < first:
            raise ValueError(f"bad layer range {part!r} in {text!r}: need 0 <= first <= last")
        layers.update(range(first, last + 1))
    return tuple(sorted(layers))


@dataclass(frozen=True)
class FinetuneConfig:
    """What to train and how; every field is saved with the run so it can be reproduced."""

    preset: str | None = field(
        default=None,
        metadata={
            "help": "keep-refusals: setting (ii), embeddings, norms and LM head frozen, 10 refusal pairs mixed in "
            "(on the aligned builtin: 19 of 21 refusal openings kept, perplexity 27.2 vs 55.1 for plain fine-tuning; "
            "docs/finetune.md); fills the settings left at their defaults",
            "choices": tuple(PRESETS),
        },
    )
    mode: str = field(
        default="full",
        metadata={"help": "full | freeze (keep safety units) | budget (train RU only)", "choices": MODES},
    )
    setting: str | None = field(
        default=None,
        metadata={
            "help": "freeze mode: 'i' = SCU + top of CU by z_S (the default), 'ii' = SCU + all CU",
            "choices": tuple(SETTINGS),
        },
    )
    freeze_classes: tuple[str, ...] = field(
        default=(), metadata={"help": "freeze mode: freeze these classes instead of a setting (ESU/EUU accepted)"}
    )
    cu_top: float = field(
        default=0.06,
        metadata={"help": "setting (i): fraction of parameters of CU frozen, highest z_S first", "ge": 0, "le": 1},
    )
    cu_top_of: str = field(
        default="model",
        metadata={
            "help": "cu_top is a fraction of all unit parameters ('model', the paper's ~7.5 %) or of CU's ('cu')",
            "choices": CU_TOP_OF,
        },
    )
    budget: float = field(
        default=0.20,
        metadata={
            "help": "budget mode: parameter fraction of redundant units to train (utility-only scoring)",
            "ge": 0,
            "le": 1,
        },
    )
    budget_samples: int = field(default=128, metadata={"help": "budget mode: utility pairs scored to find RU", "ge": 1})
    freeze_layers: str = field(default="", metadata={"help": "freeze whole decoder layers, e.g. '0-5,10'"})
    freeze_rule: str = field(
        default="function",
        metadata={
            "help": "function: a frozen unit also freezes its KV group's k/v rows and the norms it passes "
            "through (its output on a fixed layer input stays bit-identical); rows: only its own "
            "rows, k/v only when the whole group is frozen, norms train",
            "choices": FREEZE_RULES,
        },
    )
    paper_schedule: bool = field(
        default=False,
        metadata={
            "help": "the paper's schedule: freeze settings train twice the epochs (or max_steps) of plain "
            "fine-tuning, setting (i) after one epoch under setting (ii); full mode is the plain arm"
        },
    )
    train_embeddings: bool | None = field(
        default=None, metadata={"help": "train the input embeddings (default: yes, except in budget mode)"}
    )
    train_norms: bool | None = field(
        default=None,
        metadata={"help": "train norms and other non-unit tensors, e.g. o/down biases (default: yes, except budget)"},
    )
    train_lm_head: bool | None = field(
        default=None, metadata={"help": "train the LM head (default: yes, except in budget mode); tied: frozen wins"}
    )
    mix_data: str | None = field(
        default=None,
        metadata={"help": "pairs mixed into the training data, e.g. builtin:align_refusal (refusals kept)"},
    )
    mix_pairs: int = field(
        default=0, metadata={"help": "how many pairs of mix_data to add (a draw seeded by seed)", "ge": 0}
    )
    anchor: float = field(
        default=0.0,
        metadata={
            "help": "pull trained weights back toward the starting ones: after each step w -= lr * anchor * "
            "(w - w_start), a decoupled L2 toward the aligned model (0: off)",
            "ge": 0,
        },
    )
    epochs: int = field(default=1, metadata={"help": "passes over the training set", "ge": 1})
    max_steps: int | None = field(
        default=None, metadata={"help": "stop after this many optimizer steps (none: the epochs decide)", "ge": 1}
    )
    batch_size: int = field(default=4, metadata={"help": "pairs per micro-batch", "ge": 1})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step", "ge": 1})
    lr: float = field(default=2e-5, metadata={"help": "peak learning rate (AdamW)", "gt": 0})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay on matrices", "ge": 0})
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas"})
    warmup_ratio: float = field(
        default=0.03, metadata={"help": "fraction of steps of linear warm-up", "ge": 0, "le": 1}
    )
    schedule: str = field(
        default="cosine", metadata={"help": "decay after warm-up: cosine | linear | constant", "choices": SCHEDULES}
    )
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "clip the gradient norm (none: no clipping)"})
    packed_optimizer: bool = field(
        default=True,
        metadata={
            "help": "AdamW keeps moments only for the trainable rows/columns of partly frozen tensors (the same "
            "updates bit for bit, less memory); off: dense moments, frozen slices written back after each step"
        },
    )
    lora_rank: int = field(
        default=0,
        metadata={
            "help": "budget mode: train a LoRA adapter of this rank instead of the RU rows/columns themselves "
            "(safety-aware LoRA: its update is exactly zero outside RU; saved as a PEFT adapter and merged; 0: off)",
            "ge": 0,
        },
    )
    lora_alpha: int | None = field(
        default=None, metadata={"help": "LoRA scaling numerator, update = alpha / rank * B A (none: 2 x lora_rank)"}
    )
    max_length: int = field(default=512, metadata={"help": "tokens per pair; longer responses are cut", "ge": 8})
    system_prompt: str | None = field(default=None, metadata={"help": "system message for the chat template"})
    seed: int = field(default=0, metadata={"help": "seed of data order, dropout and everything random", "ge": 0})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast (CUDA only; ignored on CPU)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations (CUDA only)"})
    checkpoint_every: int = field(default=0, metadata={"help": "save a resumable checkpoint every N steps (0: never)"})
    keep_checkpoints: int = field(default=1, metadata={"help": "checkpoints kept on disk (the newest)"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in the output dir"})
    log_every: int = field(default=10, metadata={"help": "log the loss every N steps"})
    track_refusal: bool = field(
        default=False,
        metadata={
            "help": "every track_every steps, the refusal margin on harmful calibration prompts and the "
            "over-refusal margin on harmless ones (no generation), stored in the loss curve"
        },
    )
    track_every: int = field(default=10, metadata={"help": "optimizer steps between two refusal measurements", "ge": 1})
    track_prompts: int = field(default=8, metadata={"help": "prompts of each tracking set (the first N)", "ge": 1})
    track_harmful: str = field(default="builtin:safety", metadata={"help": "harmful calibration prompts tracked"})
    track_harmless: str = field(default="builtin:utility", metadata={"help": "harmless prompts tracked"})
    stop_if_refusal_below: float | None = field(
        default=None, metadata={"help": "stop when the mean tracked refusal margin falls below this (needs tracking)"}
    )
    evaluate: bool = field(default=False, metadata={"help": "evaluate safety and utility before and after"})
    eval_protocol: str | None = field(
        default=None, metadata={"help": "protocol JSON file for evaluation.evaluate (none: its default)"}
    )
    reaudit: bool = field(default=False, metadata={"help": "re-audit the result with the unit map's data and cuts"})

    def __post_init__(self):
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
            defaults = {item.name: item.default for item in fields(self)}
            for name, value in PRESETS[self.preset].items():
                if getattr(self, name) == defaults[name]:
                    object.__setattr__(self, name, value)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        object.__setattr__(self, "freeze_classes", tuple(canonical_class(name) for name in self.freeze_classes))
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.setting is not None and self.setting not in SETTINGS:
            raise ValueError(f"setting must be 'i' or 'ii', got {self.setting!r}")
        if self.mode != "freeze" and (self.setting or self.freeze_classes):
            raise ValueError(f"setting and freeze_classes only apply to mode 'freeze', not {self.mode!r}")
        if self.setting and self.freeze_classes:
            raise ValueError("give either a setting or freeze_classes, not both")
        if self.cu_top_of not in CU_TOP_OF:
            raise ValueError(f"cu_top_of must be 'model' or 'cu', got {self.cu_top_of!r}")
        for name in ("cu_top", "budget", "warmup_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1], got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.freeze_rule not in FREEZE_RULES:
            raise ValueError(f"freeze_rule must be one of {', '.join(FREEZE_RULES)}, got {self.freeze_rule!r}")
        if self.paper_schedule and not (self.mode == "full" or self.setting):
            raise ValueError("paper_schedule applies to full mode (the plain arm) and freeze settings 'i'/'ii'")
        if self.stop_if_refusal_below is not None and not self.track_refusal:
            raise ValueError("stop_if_refusal_below needs track_refusal")
        for name in (
            "epochs",
            "batch_size",
            "grad_accum",
            "budget_samples",
            "keep_checkpoints",
            "log_every",
            "track_every",
            "track_prompts",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.mix_pairs < 0 or (self.mix_pairs > 0) != bool(self.mix_data):
            raise ValueError(f"give mix_data and mix_pairs >= 1 together, got {self.mix_data!r} and {self.mix_pairs}")
        if self.anchor < 0:
            raise ValueError(f"anchor must be >= 0, got {self.anchor}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be 0 (off) or positive, got {self.checkpoint_every}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got lr={self.lr}, weight_decay={self.weight_decay}")
        if not all(0.0 <= beta < 1.0 for beta in self.betas) or len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")
        parse_layer_range(self.freeze_layers)
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be 0 (off) or positive, got {self.lora_rank}")
        if self.lora_alpha is not None and (not self.lora_rank or self.lora_alpha <= 0):
            raise ValueError(f"lora_alpha needs lora_rank and must be positive, got {self.lora_alpha}")
        if self.lora_rank:
            if self.mode != "budget":
                raise ValueError(f"lora_rank trains the redundant units: it needs mode 'budget', not {self.mode!r}")
            if self.paper_schedule:
                raise ValueError("lora_rank does not combine with paper_schedule")
            trained = [part for part in ("embeddings", "norms", "lm_head") if getattr(self, f"train_{part}")]
            if trained:
                raise ValueError(f"under lora_rank only the adapter trains; drop train_{', train_'.join(trained)}")

    @property
    def length_factor(self) -> int:
        """How many times the run's epochs (or max_steps) it trains: 2 for a freeze arm of the paper schedule."""
        return 2 if self.paper_schedule and self.mode == "freeze" else 1

    @property
    def layers_frozen(self) -> tuple[int, ...]:
        return parse_layer_range(self.freeze_layers)

    def trains(self, part: str) -> bool:
        """Whether ``part`` ('embeddings', 'norms', 'lm_head') trains: the explicit flag or the mode's default."""
        flag = getattr(self, f"train_{part}")
        return self.mode != "budget" if flag is None else flag

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "FinetuneConfig":
        """A config from user settings (CLI flags, an API body): unknown keys are errors; freeze mode with
        neither a setting nor classes means setting 'i'."""
        known = {item.name for item in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown finetune settings: {', '.join(sorted(unknown))}")
        values = dict(values)
        if values.get("mode") == "freeze" and not (values.get("setting") or values.get("freeze_classes")):
            if not values.get("preset"):  # a preset brings its own setting
                values["setting"] = "i"
        return cls(**values)

    # Fields that may differ between a run and its resumption without changing the result.
    # packed_optimizer: both paths compute the same bits and load each other's checkpoints.
    RESUME_FREE = (
        "resume",
        "log_every",
        "evaluate",
        "eval_protocol",
        "reaudit",
        "keep_checkpoints",
        "packed_optimizer",
    )
