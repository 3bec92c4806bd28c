"""Engine-facing glue: job parameters -> engine configs, dataset ids -> files, a per-process model cache.

The API validated the parameters (service/schemas/jobs.py); the engine's own configs validate again.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from service import queries
from service.model_policy import CheckedSource, check_for_tenant
from service.schemas.engine_settings import stored_config
from service.schemas.jobs import FINETUNE_DATASET_SETTINGS
from service.schemas.jobs import finetune_config as stored_finetune_config
from service.settings import Settings
from ssah_engine.audit_config import AuditConfig
from ssah_engine.data import Dataset, DatasetError, load_dataset
from ssah_engine.evaluation import AblationSpec, DataRef, Protocol
from ssah_engine.finetune import FinetuneConfig
from ssah_engine.loading import LoadedModel, LoadOptions, load_model
from ssah_engine.probe import ProbeConfig

log = logging.getLogger(__name__)

DEFAULT_SAFETY = "builtin:safety"
DEFAULT_UTILITY = "builtin:utility"


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
)


def evaluation_protocol(
    params: dict[str, Any],
    *,
    harmful: str | None,
    instructions: str | None,
    sample_limit: int | None,
    suffixes: str | None = None,
) -> Protocol:
    """The protocol of an evaluation job: the default one with the request's settings, as `ssah eval` builds it.

    ``samples`` takes the first N harmful and N harmless prompts (the CLI's meaning); ``sample_limit``,
    the worker's own cap, bounds every set.
    """
    changes: dict[str, Any] = {name: params[name] for name in PROTOCOL_SETTINGS if params.get(name) is not None}
    changes["ablation_compensation"] = params.get("compensation", "none")
    if suffixes:
        changes["suffixes"] = DataRef(suffixes)
    protocol = Protocol.from_dict(changes)
    refs = protocol.datasets()
    if harmful:
        refs["harmful"] = DataRef(harmful)
    if instructions:
        refs["instructions"] = DataRef(instructions, refs["instructions"].limit)
    if params.get("samples"):
        for name in ("harmful", "harmless"):
            refs[name] = DataRef(refs[name].source, int(params["samples"]))
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


def dataset_file(session: Session, settings: Settings, *, tenant_id: uuid.UUID, dataset_id: str) -> tuple[str, str]:
    """(path with the format's extension, display name) of the tenant's uploaded dataset ``dataset_id``.

    Uploads are stored content-addressed without an extension; the engine picks its reader from the
    extension, so a stable ``<sha256>.<format>`` link sits next to the file (stable: the evaluation
    protocol hash covers the path).
    """
    row = queries.get_dataset(session, tenant_id=tenant_id, dataset_id=uuid.UUID(str(dataset_id)))
    if row is None:
        raise DatasetError(f"dataset {dataset_id} does not exist (deleted?)")
    stored = (Path(settings.artifact_dir) / row.path).resolve()
    if not stored.is_file():
        raise DatasetError(f"the file of dataset {row.name!r} ({row.id}) is missing from the artifact store")
    linked = stored.with_name(f"{stored.name}.{row.format}")
    if not linked.exists():
        try:
            os.symlink(stored.name, linked)
        except FileExistsError:
            pass
        except OSError:  # no symlinks on this filesystem
            shutil.copyfile(stored, linked)
    return str(linked), f"dataset {row.name!r} ({row.id})"


def read_dataset(path: str, display: str, *, limit: int | None = None, require_response: bool = True) -> Dataset:
    """Load a dataset; errors name the dataset, the line and the field as the engine found them."""
    try:
        return load_dataset(path, limit=limit, require_response=require_response)
    except DatasetError as error:
        if error.path is None or path.startswith("builtin:"):
            raise
        raise DatasetError(
            error.reason, path=display, line=error.line, field=error.field, line_label=error.line_label
        ) from None


class ModelCache:
    """Loaded models of this process, least recently used evicted first; keyed by source, device, dtype."""

    def __init__(self, size: int):
        self.size = size
        self._models: OrderedDict[tuple[str, str | None, str | None], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: str, options: LoadOptions) -> LoadedModel:
        """The model of ``source``, loaded once and then reused (do not change its weights)."""
        key = (source, options.device, options.dtype)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        loaded = load_model(source, options)
        if self.size > 0:
            with self._lock:
                self._models[key] = loaded
                while len(self._models) > self.size:
                    self._models.popitem(last=False)
                    self._release()
        return loaded

    def clear(self) -> None:
        with self._lock:
            self._models.clear()
            self._release()

    @staticmethod
    def _release() -> None:
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


_cache: ModelCache | None = None
_cache_lock = threading.Lock()


def model_cache(settings: Settings) -> ModelCache:
    """This process's model cache (built lazily, so each prefork child has its own)."""
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = ModelCache(settings.model_cache_size)
        return _cache


def load_options(settings: Settings, *, dtype: str | None = None) -> LoadOptions:
    """Loading options from the settings (device, dtype, trust_remote_code); ``dtype`` overrides."""
    return LoadOptions(
        device=settings.device, dtype=dtype or settings.dtype, trust_remote_code=settings.allow_trust_remote_code
    )


def allowed_source(settings: Settings, *, tenant_id: uuid.UUID, source: str) -> str:
    """``source`` if the deployment's model policy allows it; raises ``SourceRefused`` (a ValueError) if not.

    Checked again here although the API checked it: the policy may have tightened since the model
    was registered, and a job row need not have come through the API.
    """
    check_for_tenant(settings, tenant_id, source)
    return source


def checked_source(settings: Settings, *, tenant_id: uuid.UUID, source: str) -> CheckedSource:
    """``allowed_source``, also saying what kind of source it is (hub id, revision, local path...)."""
    return check_for_tenant(settings, tenant_id, source)
