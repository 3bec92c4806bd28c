"""Schemas of jobs: what each kind of job takes, and how a job reads back."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from ssah_engine.audit_config import AuditConfig
from ssah_engine.data.benchmarks import BENCH_PREFIX, parse_bench
from ssah_engine.data.builtin import BUILTIN_PREFIX, builtin_names
from ssah_engine.data.loaders import HF_PREFIX, parse_hf
from ssah_engine.finetune import FinetuneConfig
from ssah_engine.judge_spec import JudgeSpec
from ssah_engine.placement import Placement
from ssah_engine.probe import ProbeConfig

from .engine_settings import EngineJob, job_schema, settings_fields, stored_config
from .integrations import GateRead, JobIntegrations

JobKindName = Literal["audit", "evaluation", "finetune", "comparison", "probe"]
JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
# The paper's exclusive-unit names (ESU, EUU) are accepted as spellings of SCU and UCU.
AblateClass = Literal["SCU", "ESU", "UCU", "EUU", "CU", "RU"]
CANONICAL_CLASS = {"SCU": "SCU", "ESU": "SCU", "UCU": "UCU", "EUU": "UCU", "CU": "CU", "RU": "RU"}


# What an audit may cost on this service (AuditConfig checks its own bounds).
AUDIT_LIMITS: dict[str, dict[str, Any]] = {
    "samples": {"le": 100_000, "description": "Pairs per calibration set; see max_samples_per_request."},
    "max_length": {"le": 131_072, "description": "Tokens per pair; see max_sequence_length."},
    "batch_size": {"le": 1024},
    "seed": {"le": 2**32 - 1},
    "self_response_tokens": {"le": 4096},
}


class _PlacementBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _valid_placement(self) -> _PlacementBody:
        Placement.from_dict(self.model_dump())  # the engine's validator: a bad memory map is a 422
        return self


# A device map for a model bigger than one GPU: Placement's fields (the CLI's --device-map, --max-memory),
# less the offload folder, which the worker picks (the job's scratch space).
PlacementRequest: Any = create_model(  # type: ignore[call-overload]  # mypy checks **fields against the dunder keywords
    "PlacementRequest",
    __base__=_PlacementBody,
    __doc__="Spread the model's layers over the worker's GPUs, its CPU memory and disk (accelerate's device map).",
    __module__=__name__,
    **settings_fields(Placement, exclude=("offload_folder",), limits={"max_memory": {"max_length": 200}}),
)


class _Placed(BaseModel):
    placement: PlacementRequest | None = Field(
        None,
        description="A device map for a model bigger than one GPU; absent: the whole model on the worker's device.",
    )


class _AuditJob(_Placed, JobIntegrations, EngineJob):
    """Find the safety-critical, utility-critical, complex and redundant units of a model.

    Every other field is a setting of ``AuditConfig``, with the names, defaults and meaning of
    ``ssah audit``'s flags.
    """

    engine_config_class = AuditConfig

    model_id: uuid.UUID
    safety_dataset_id: uuid.UUID | None = Field(None, description="Absent: the built-in safety set.")
    utility_dataset_id: uuid.UUID | None = Field(None, description="Absent: the built-in utility set.")

    def check(self, config: AuditConfig) -> None:
        if self.placement is not None and self.placement.device_map is not None and config.stream_layers:
            raise ValueError("stream_layers holds one layer on one device at a time: give it no device map")


AuditCreate = job_schema("AuditCreate", _AuditJob, limits=AUDIT_LIMITS, module=__name__)


PROMPT_SOURCE_HELP = (
    "a named benchmark bench:NAME[/SUBSET] (docs/evaluation.md lists them) or builtin:NAME; "
    "bench:NAME[/SUBSET]=DATASET_ID reads one of your uploads in the benchmark's own file layout; "
    "hf:org/name[:split][?config=&revision=&prompt=COLUMN...] a hub dataset of an organisation the "
    "deployment allows (its model policy's hub organisations)"
)


def prompt_source(value: str | None) -> str | None:
    """A prompt set named in a request: ``builtin:NAME`` or ``bench:NAME[/SUBSET][=DATASET_ID]``.

    A tenant names no server paths: what follows ``=`` must be the id of an upload (the route checks
    it is the caller's). Returned normalised (the id in canonical form).
    """
    if value is None:
        return None
    if value.startswith(HF_PREFIX):
        hub_dataset(value)  # the syntax; the route checks the organisation against the model policy
        return value
    if value.startswith(BUILTIN_PREFIX):
        if value.removeprefix(BUILTIN_PREFIX) not in builtin_names():
            raise ValueError(f"no builtin dataset {value!r}; builtins: {', '.join(builtin_names())}")
        return value
    if not value.startswith(BENCH_PREFIX):
        raise ValueError(f"name a prompt set as {PROMPT_SOURCE_HELP}; got {value!r}")
    try:
        bench = parse_bench(value)[0]
    except ValueError as error:  # the engine's DatasetError, naming the known benchmarks
        raise ValueError(str(error)) from None
    if bench.gated:  # the worker would fetch it with the operator's hub access, not the tenant's own
        raise ValueError(f"{bench.title} is gated and needs your own hub access: run it with `ssah eval`")
    head, sep, upload = value.partition("=")
    if not sep:
        return value
    try:
        return f"{head}={uuid.UUID(upload)}"
    except ValueError:
        raise ValueError(
            f"after '=' give the id of one of your uploaded datasets, not a path; got {upload!r}"
        ) from None


def hub_dataset(value: str | None) -> str | None:
    """``org/name[@revision]`` of an ``hf:`` source, as the model policy reads hub ids; None for other sources."""
    if not value or not value.startswith(HF_PREFIX):
        return None
    try:
        repo, _split, options = parse_hf(value.removeprefix(HF_PREFIX))
    except ValueError as error:  # the engine's DatasetError, naming the expected form
        raise ValueError(str(error)) from None
    return f"{repo}@{options['revision']}" if "revision" in options else repo


def source_upload(value: str | None) -> uuid.UUID | None:
    """The upload a ``bench:NAME=DATASET_ID`` source reads, or None."""
    return uuid.UUID(value.partition("=")[2]) if value and value.startswith(BENCH_PREFIX) and "=" in value else None


# What a judge may ask of this service (JudgeSpec checks the rest); endpoints and key variables are the
# deployment's allow-lists (Settings.judge_endpoints, judge_key_envs), checked by the route and the worker.
JUDGE_LIMITS: dict[str, dict[str, Any]] = {
    "source": {"max_length": 1000},
    "revision": {"max_length": 128},
    "config_sha256": {"max_length": 64},
    "base_url": {"max_length": 1000},
    "api_key_env": {"max_length": 128},
    "prompt_template": {"max_length": 20_000},
    "unsafe_labels": {"max_length": 16},
    "max_length": {"le": 131_072},
    "max_new_tokens": {"le": 4096},
    "device_map": {"max_length": 64},
    "timeout_s": {"le": 3600},
    "requests_per_second": {"le": 1000},
}
# The judge object of an evaluation: every JudgeSpec field, its default, choices and help ('causal', the
# engine's old kind name, is not offered here).
JudgeRequest: Any = create_model(  # type: ignore[call-overload]  # mypy checks **fields against the dunder keywords
    "JudgeRequest",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A judge model: in-process (hub id or directory) or on an OpenAI-compatible endpoint (base_url).",
    __module__=__name__,
    **settings_fields(JudgeSpec, limits=JUDGE_LIMITS),
)


class EvaluationCreate(_Placed, JobIntegrations):
    """Score a model's safety and utility, optionally with one class of an audit's units ablated."""

    model_config = ConfigDict(extra="forbid")

    model_id: uuid.UUID
    audit_id: uuid.UUID | None = None
    ablate: AblateClass | list[AblateClass] | None = Field(
        None,
        description="Class or classes of the audit's units removed while evaluating. Needs audit_id. ESU = SCU, EUU = UCU.",
    )
    control: Literal["random"] | None = Field(
        None,
        description="'random': remove as many random heads and neurons from outside the classes instead (a matched control).",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the random control.")
    compensation: Literal["none", "safety", "utility", "pooled"] = Field(
        "none",
        description="What replaces removed units: none (zeroing), or their mean input on the safety "
        "(the paper's), utility or both calibration passes.",
    )
    prompt_format: Literal["chat", "no_inst", "raw"] = Field(
        "chat",
        description="chat: the model's chat template; no_inst: the paper's Table 1 text without a template; raw.",
    )
    conditions: list[Literal["system", "no_system", "suffix"]] = Field(
        ["system", "no_system"],
        min_length=1,
        max_length=3,
        description="With the safety system prompt, without it, and with the suffixes of suffixes_dataset_id.",
    )
    suffixes_dataset_id: uuid.UUID | None = Field(
        None, description="Uploaded text dataset of adversarial suffixes, one per line, for the 'suffix' condition."
    )
    suffix_format: Literal["chat", "no_inst", "raw"] | None = Field(
        None, description="Prompt format of the 'suffix' condition (the paper's: chat); absent: prompt_format."
    )
    # Defaults are the evaluation Protocol's (tests/service/test_contract.py holds them equal).
    max_new_tokens: int = Field(
        256, ge=1, le=131_072, description="New tokens per response (paper: 256); see max_sequence_length."
    )
    batch_size: int = Field(
        8, ge=1, le=1024, description="Prompts per batch (results equal one-by-one up to float rounding)."
    )
    system_prompt: str | None = Field(
        None,
        min_length=1,
        max_length=20_000,
        description="The safety system prompt of 'system'; absent: Llama-2's default.",
    )
    refusal_lists: list[str] | None = Field(
        None,
        min_length=1,
        max_length=8,
        description="Named refusal lists, the first gives the headline ASR; absent: ssah-31, advbench-29.",
    )
    zero_shot_tasks: list[str] | None = Field(
        None,
        max_length=32,
        description="lm-eval tasks run when lm-eval and their data are on the worker; [] for "
        "none; absent: the paper's six.",
    )
    zero_shot_num_fewshot: int | None = Field(
        None, ge=0, le=32, description="Examples before each zero-shot question; absent: 0 (the paper's)."
    )
    samples: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="The first N harmful and N harmless prompts, as `ssah eval --samples` "
        "(absent: the protocol's); see max_samples_per_request.",
    )
    safety_dataset_id: uuid.UUID | None = Field(None, description="Uploaded harmful prompts; absent: harmful_source.")
    utility_dataset_id: uuid.UUID | None = None
    harmful_source: str | None = Field(
        None,
        max_length=200,
        description=f"Harmful prompts for ASR: {PROMPT_SOURCE_HELP}. Absent: safety_dataset_id, else the built-in set.",
        examples=["bench:harmbench/contextual"],
    )
    harmless_source: str | None = Field(
        None,
        max_length=200,
        description=f"Harmless prompts for over-refusal: {PROMPT_SOURCE_HELP}. Absent: the built-in set.",
        examples=["bench:xstest/safe"],
    )
    judge: JudgeRequest | None = Field(  # JudgeRequest is Any to a type checker: built at import time
        None,
        description="A judge model for the harmful responses (Llama Guard, HarmBench, StrongREJECT, a classifier); "
        "the fields and meaning of `ssah eval --judge*`. Absent: keyword lists and the refusal margin only.",
    )

    @field_validator("harmful_source", "harmless_source")
    @classmethod
    def _prompt_source(cls, value: str | None) -> str | None:
        return prompt_source(value)

    @field_validator("ablate")
    @classmethod
    def _canonical(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError("ablate needs at least one class")
        return list(dict.fromkeys(CANONICAL_CLASS[name] for name in names))

    @model_validator(mode="after")
    def _ablate_needs_audit(self) -> EvaluationCreate:
        if self.ablate is not None and self.audit_id is None:
            raise ValueError("ablate needs audit_id")
        if self.control is not None and self.ablate is None:
            raise ValueError("control needs ablate: the classes it is matched to")
        if len(set(self.conditions)) != len(self.conditions):
            raise ValueError("conditions repeat")
        if ("suffix" in self.conditions) != (self.suffixes_dataset_id is not None):
            raise ValueError("the 'suffix' condition and suffixes_dataset_id go together")
        if self.harmful_source is not None and self.safety_dataset_id is not None:
            raise ValueError("give the harmful prompts once: harmful_source or safety_dataset_id")
        if self.judge is not None:
            JudgeSpec.from_dict(self.judge.model_dump(mode="json"))  # the engine's own checks, as a 422
        return self


# FinetuneConfig fields the API keeps to itself: a server path, and checkpointing, which the worker owns.
FINETUNE_SERVER_ONLY = ("eval_protocol", "resume", "checkpoint_every", "keep_checkpoints", "log_every")
# Settings that name a dataset: ``builtin:NAME`` or the id of one of the tenant's uploads.
FINETUNE_DATASET_SETTINGS = ("mix_data", "track_harmful", "track_harmless")
# What a job may cost on this service (the engine's own bounds are checked by FinetuneConfig).
FINETUNE_LIMITS: dict[str, dict[str, Any]] = {
    "epochs": {"le": 100},
    "max_steps": {"le": 1_000_000},
    "batch_size": {"le": 1024},
    "grad_accum": {"le": 1024},
    "lr": {"le": 1},
    "max_length": {"le": 131_072, "description": "Tokens per pair; see max_sequence_length."},
    "budget_samples": {"le": 100_000},
    "mix_pairs": {"le": 100_000},
    "track_every": {"le": 100_000},
    "track_prompts": {"le": 1024},
    "stop_if_refusal_below": {"ge": -1000, "le": 1000},
}


class _FinetuneJob(JobIntegrations, EngineJob):
    """Fine-tune a model; ``freeze`` and ``budget`` keep an audit's safety units intact.

    Every other field is a setting of ``FinetuneConfig``, with the names, defaults and meaning of
    ``ssah finetune``'s flags.
    """

    engine_config_class = FinetuneConfig
    server_only = FINETUNE_SERVER_ONLY

    model_id: uuid.UUID
    dataset_id: uuid.UUID
    audit_id: uuid.UUID | None = Field(None, description="Audit whose units guide freeze/budget.")

    @field_validator(*FINETUNE_DATASET_SETTINGS, check_fields=False)
    @classmethod
    def _dataset_reference(cls, value: str | None) -> str | None:
        if value is None or value.startswith(BUILTIN_PREFIX):
            if value is not None and value.removeprefix(BUILTIN_PREFIX) not in builtin_names():
                raise ValueError(f"no builtin dataset {value!r}; builtins: {', '.join(builtin_names())}")
            return value
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError(f"name a dataset as builtin:NAME or by its id, got {value!r}") from None

    def check(self, config: FinetuneConfig) -> None:
        if config.mode != "full" and self.audit_id is None:  # the mode as a preset may have set it
            raise ValueError(f"mode {config.mode!r} needs audit_id")


FinetuneCreate = job_schema("FinetuneCreate", _FinetuneJob, limits=FINETUNE_LIMITS, module=__name__)


def finetune_config(params: dict[str, Any]) -> FinetuneConfig:
    """The engine config of a stored fine-tune job's parameters (dataset ids not yet resolved to files)."""
    return stored_config(FinetuneConfig, params, exclude=FINETUNE_SERVER_ONLY)


class ComparisonCreate(BaseModel):
    """Cross-tabulate unit roles between two succeeded audits (e.g. before and after a fine-tune)."""

    model_config = ConfigDict(extra="forbid")

    before_audit_id: uuid.UUID
    after_audit_id: uuid.UUID


PROBE_LIMITS: dict[str, dict[str, Any]] = {
    "ks": {"min_length": 1, "max_length": 16},
    "queries": {"le": 100_000},
    "calibration": {"le": 100_000},
    "batch_size": {"le": 1024},
    "max_length": {"le": 131_072, "description": "Tokens per rendered prompt; see max_sequence_length."},
}


class _ProbeJob(_Placed, JobIntegrations, EngineJob):
    """The paper's reasoning-direction probe, the refusal direction and (with audit_id) unit writes along it.

    Every other field is a setting of ``ProbeConfig``, with the names, defaults and meaning of
    ``ssah probe``'s flags.
    """

    engine_config_class = ProbeConfig

    model_id: uuid.UUID
    audit_id: uuid.UUID | None = Field(None, description="A succeeded audit of this model: unit writes per class.")
    harmful_dataset_id: uuid.UUID | None = Field(
        None,
        description="Harmful prompts with refusals (probed queries, harmful calibration); absent: builtin safety set.",
    )
    harmless_dataset_id: uuid.UUID | None = Field(
        None, description="Harmless calibration prompts; absent: builtin utility set."
    )


ProbeCreate = job_schema("ProbeCreate", _ProbeJob, limits=PROBE_LIMITS, module=__name__)


class JobRead(BaseModel):
    """A job and where it stands in its lifecycle."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: JobKindName
    status: JobStatusName
    progress: float = Field(ge=0, le=1)
    progress_message: str | None
    params: dict[str, Any]
    error: str | None
    model_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    enqueued_at: datetime | None = Field(description="When the broker accepted the job; null while pending.")
    attempts: int
    cancel_requested: bool
    version: int = Field(description="Bumped on every change; the ETag is built from it.")
    labels: dict[str, str] = Field(description="The job's free labels.")
    callback_url: str | None = Field(description="Where the job resource is POSTed once the job ends.")
    gate: GateRead | None = Field(description="The gate and, once the job succeeded, its verdict (gate.passed).")
