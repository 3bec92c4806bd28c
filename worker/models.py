"""Models in a worker process: the per-process cache, loading options, and the model-source policy."""

from __future__ import annotations

import gc
import threading
import uuid
from collections import OrderedDict

from service.model_policy import CheckedSource, check_for_tenant
from service.settings import Settings
from ssah_engine.loading import LoadedModel, LoadOptions, load_model
from ssah_engine.placement import Placement
from worker import metrics


class ModelCache:
    """Loaded models of this process, least recently used evicted first; keyed by source, device, dtype."""

    def __init__(self, size: int):
        self.size = size
        self._models: OrderedDict[tuple[str, str | None, str | None, Placement], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: str, options: LoadOptions) -> LoadedModel:
        """The model of ``source``, loaded once and then reused (do not change its weights)."""
        key = (source, options.device, options.dtype, options.placement)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        with metrics.timed_load():
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


def load_options(settings: Settings, *, dtype: str | None = None, placement: Placement | None = None) -> LoadOptions:
    """Loading options from the settings (device, dtype, trust_remote_code); ``dtype`` overrides.

    A job's ``placement`` with a device map replaces the worker's device (the map spans the GPUs it sees)."""
    placement = placement or Placement()
    return LoadOptions(
        device=None if placement.active else settings.device,
        dtype=dtype or settings.dtype,
        trust_remote_code=settings.allow_trust_remote_code,
        placement=placement,
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
