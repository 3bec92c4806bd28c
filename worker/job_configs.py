"""Stored job parameters -> the engine's configs (the API validated them against the same configs).

Each reader also carries what older stored jobs mean: defaults that changed since they were queued.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.schemas.engine_settings import stored_config
from service.schemas.jobs import FINETUNE_DATASET_SETTINGS
from service.schemas.jobs import finetune_config as stored_finetune_config
from ssah_engine.audit_config import AuditConfig
from ssah_engine.evaluation import AblationSpec, DataRef, Protocol
from ssah_engine.finetune import FinetuneConfig
from ssah_engine.probe import ProbeConfig


def audit_config(params: dict[str, Any]) -> AuditConfig:
    """The engine config of a stored audit job."""
    # a job queued before seeded sampling existed drew the first N pairs
    return stored_config(AuditConfig, {"sampling": "first", **params})


# EvaluationCreate fields that are Protocol settings under the same name; absent or None: the protocol's.
PROTOCOL_SETTINGS = (
    "max_new_tokens",
    "batch_size",
    "prompt_format",
    "suffix_format",
    "conditions",
    "system_prompt",
    "refusal_lists",
    "zero_shot_tasks",
    "zero_shot_num_fewshot",
)


def evaluation_protocol(
    params: dict[str, Any],
    *,
    harmful: str | None,
    instructions: str | None,
    sample_limit: int | None,
    suffixes: str | None = None,
    harmless: str | None = None,
) -> Protocol:
    """The protocol of an evaluation job: the default one with the request's settings, as `ssah eval` builds it.

    ``samples`` takes the first N harmful and N harmless prompts (the CLI's meaning); ``sample_limit``,
    the worker's own cap, bounds every set.
    """
    changes: dict[str, Any] = {name: params[name] for name in PROTOCOL_SETTINGS if params.get(name) is not None}
    changes["ablation_compensation"] = params.get("compensation", "none")
    if params.get("judge"):
        changes["judge"] = params["judge"]  # JudgeSpec's fields; Protocol.from_dict builds and checks it
    if suffixes:
        changes["suffixes"] = DataRef(suffixes)
    protocol = Protocol.from_dict(changes)
    if params.get("samples"):
        protocol = protocol.with_samples(int(params["samples"]))
    refs = protocol.datasets()
    if harmful:
        refs["harmful"] = DataRef(harmful, refs["harmful"].limit)  # keeps the samples cap
    if harmless:
        refs["harmless"] = DataRef(harmless, refs["harmless"].limit)
    if instructions:
        refs["instructions"] = DataRef(instructions, refs["instructions"].limit)
    if sample_limit:
        refs = {name: DataRef(ref.source, min(ref.limit or sample_limit, sample_limit)) for name, ref in refs.items()}
    extra = {"zero_shot_limit": min(protocol.zero_shot_limit or sample_limit, sample_limit)} if sample_limit else {}
    return protocol.replace(**refs, **extra)


def ablation_spec(params: dict[str, Any]) -> AblationSpec | None:
    """What an evaluation job removes (``EvaluationCreate.ablate``/``control``/``seed``); None when nothing."""
    classes = params.get("ablate")
    if not classes:
        return None
    classes = [classes] if isinstance(classes, str) else classes  # jobs stored before lists were accepted
    return AblationSpec(tuple(classes), control=params.get("control"), seed=int(params.get("seed", 0)))


def finetune_config(params: dict[str, Any], dataset_path: Callable[[str], str]) -> FinetuneConfig:
    """The engine config of a stored fine-tune job; ``dataset_path`` turns a dataset id into its file."""
    params = {"freeze_rule": "rows", **params}  # a job queued before the rule existed ran under "rows"
    if params.get("mode", "full") != "freeze":
        params.pop("setting", None)  # jobs queued before the shared contract stored setting "i" in every mode
    for name in FINETUNE_DATASET_SETTINGS:
        value = params.get(name)
        if value and not value.startswith("builtin:"):
            params[name] = dataset_path(value)
    return stored_finetune_config(params)


def probe_config(params: dict[str, Any]) -> ProbeConfig:
    """The engine config of a stored probe job."""
    return stored_config(ProbeConfig, params)
