"""``run_job``: the frame around every task body (claim, scratch space, heartbeat, finish or fail).

Celery tasks and the embedded worker thread both call it, so both run jobs the same way.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError as DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from service import logs
from service.model_policy import check_for_tenant, finetune_model_dir
from service.models import JobStatus
from service.settings import Settings
from ssah_engine.data import Dataset, DatasetError
from ssah_engine.data.loaders import HF_PREFIX, parse_hf
from ssah_engine.loading import LoadedModel, ModelLoadError, pick_device_and_dtype
from ssah_engine.placement import Placement
from ssah_engine.unitmap import UnitMap
from worker import datasets, metrics, models
from worker.lifecycle import Cancelled, Claim, Progress, Superseded, claim_job, finish_job, heartbeat
from worker.model_size import check_model_size
from worker.provenance import provenance
from worker.public_errors import public_error
from worker.store import ArtifactStore, job_key

log = logging.getLogger(__name__)

# Worth retrying the whole task for: the job could not even be marked failed.
TRANSIENT = (DatabaseError, BrokerError, RedisConnectionError)
# Errors whose message is already written for the user: stored verbatim.
USER_ERRORS = (ModelLoadError, DatasetError, ValueError, FileNotFoundError)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` or its cause is a full disk, including libraries that wrap it (safetensors' Rust I/O)."""
    for _ in range(8):  # a cause chain, not a cycle
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        if any(text in str(exc) for text in ("No space left on device", "Disk quota exceeded")):
            return True
        if (exc := exc.__cause__ or exc.__context__) is None:
            return False
    return False


@dataclass
class JobRun:
    """One attempt at a job, as a task body sees it."""

    claim: Claim
    settings: Settings
    factory: sessionmaker[Session]
    store: ArtifactStore
    scratch: Path
    progress: Progress
    loaded_model: dict | None = None  # source, revision and commit of the model model() loaded (provenance.py)

    @property
    def id(self) -> uuid.UUID:
        return self.claim.job_id

    @property
    def params(self) -> dict:
        return self.claim.params

    def dataset_path(self, dataset_id: str | None) -> str | None:
        """The loadable path of the tenant's uploaded dataset (checked now, so errors name it), or None."""
        if dataset_id is None:
            return None
        with self.factory() as session:
            path, display = datasets.dataset_file(
                session, self.settings, tenant_id=self.claim.tenant_id, dataset_id=dataset_id
            )
        datasets.read_dataset(path, display, require_response=False)
        return path

    def prompt_source(self, source: str | None) -> str | None:
        """A request's ``builtin:``/``bench:``/``hf:`` source, ``bench:NAME=DATASET_ID`` turned into the upload's
        file (loaded now, so errors name the tenant's dataset, not the server path). An ``hf:`` repo is checked
        against the model policy's hub organisations again, as models are right before loading."""
        if source and source.startswith(HF_PREFIX):
            repo, _split, options = parse_hf(source.removeprefix(HF_PREFIX))
            check_for_tenant(
                self.settings, self.claim.tenant_id, f"{repo}@{options['revision']}" if "revision" in options else repo
            )
            return source
        if not source or "=" not in source:
            return source
        head, _, dataset_id = source.partition("=")
        with self.factory() as session:
            path, display = datasets.dataset_file(
                session, self.settings, tenant_id=self.claim.tenant_id, dataset_id=dataset_id
            )
        datasets.read_dataset(f"{head}={path}", display, require_response=False)
        return f"{head}={path}"

    def dataset(self, dataset_id: str | None, *, default: str | None = None, require_response: bool = True) -> Dataset:
        """The uploaded dataset ``dataset_id``, or the builtin ``default`` when None."""
        if dataset_id is None:
            return datasets.read_dataset(default, default, require_response=require_response)
        with self.factory() as session:
            path, display = datasets.dataset_file(
                session, self.settings, tenant_id=self.claim.tenant_id, dataset_id=dataset_id
            )
        return datasets.read_dataset(path, display, require_response=require_response)

    def model(self, *, fresh: bool = False, dtype: str | None = None, streamed: bool = False) -> LoadedModel:
        """The job's model from this process's cache; ``fresh`` loads a private copy (for training), ``streamed``
        a skeleton whose decoder layers a streamed audit reads from the checkpoint one at a time (never cached)."""
        if self.claim.model_source is None:
            raise ModelLoadError(f"job {self.id} has no model (was it deleted?)")
        registered = models.checked_source(
            self.settings, tenant_id=self.claim.tenant_id, source=self.claim.model_source
        )
        checked = registered
        if registered.kind == "finetune":  # the tenant's own fine-tune: its directory, checked like any local path
            directory = finetune_model_dir(self.settings.artifact_dir, self.claim.tenant_id, registered.source)
            checked = models.checked_source(self.settings, tenant_id=self.claim.tenant_id, source=directory)
        source = checked.source
        self.progress("loading model", 0.0)
        placement = Placement.from_dict(self.params.get("placement"))
        if placement.active:  # layers offloaded to disk go to the job's scratch space, gone with the job
            placement = dataclasses.replace(placement, offload_folder=str(self.scratch / "offload"))
        options = models.load_options(self.settings, dtype=dtype, placement=placement)
        check_model_size(checked, self.settings, dtype=str(pick_device_and_dtype(options)[1]).removeprefix("torch."))
        if streamed:
            from ssah_engine.streaming import load_streamed

            loaded = load_streamed(source, options)
        elif fresh or placement.active:  # a placed model's offload folder is the job's: never cached
            from ssah_engine.loading import load_model

            with metrics.timed_load():
                loaded = load_model(source, options)
        else:
            loaded = models.model_cache(self.settings).get(source, options)
        self.loaded_model = {**provenance(checked), "source": registered.source}  # never the server path
        return loaded

    def unit_map(self, audit_id: str) -> UnitMap:
        """The unit map written by the tenant's audit ``audit_id``."""
        path = self.store.fetch(job_key(self.claim.tenant_id, audit_id, "unit_map"), self.scratch)
        return UnitMap.load(path)

    def publish(self, local: Path | str, name: str) -> str:
        """Store ``local`` as the job's artifact ``name``; return its URI."""
        return self.store.put(Path(local), job_key(self.claim.tenant_id, self.id, name))

    def succeed(self, store: Callable[[Session], None]) -> None:
        """Write the results (``store(session)``) and mark the job succeeded, in one transaction."""
        finish_job(self.factory, self.claim, JobStatus.succeeded, store=store)


Body = Callable[[JobRun], None]


def run_job(
    job_id: str | uuid.UUID,
    kind: str,
    body: Body,
    *,
    settings: Settings,
    factory: sessionmaker[Session],
    store: ArtifactStore,
    takeover: bool = False,
) -> str:
    """Run ``body`` for job ``job_id``; return how it ended (succeeded, failed, cancelled, skipped, superseded).

    Transient infrastructure errors (database, broker) propagate so the caller can retry the task.
    Log lines inside carry the job's id and tenant; the ``ssah_worker_*`` metrics count the outcome.
    """
    with logs.context(job_id=job_id):
        claim = claim_job(
            factory,
            uuid.UUID(str(job_id)),
            kind=kind,
            stale_seconds=settings.stale_seconds,
            takeover=takeover,
            max_attempts=settings.max_job_attempts,
        )
        if claim is None:
            metrics.JOBS.labels(kind, "skipped").inc()
            return "skipped"
        metrics.ATTEMPTS.labels(kind).inc()
        if claim.attempt > 1:
            metrics.RETRIES.labels(kind).inc()
        start, outcome = time.perf_counter(), "transient_error"
        try:
            with logs.context(tenant_id=claim.tenant_id), metrics.gpu_peak(kind):
                outcome = _attempt(claim, kind, body, settings=settings, factory=factory, store=store)
        finally:
            metrics.JOBS.labels(kind, outcome).inc()
            metrics.DURATION.labels(kind).observe(time.perf_counter() - start)
        return outcome


def _attempt(
    claim: Claim, kind: str, body: Body, *, settings: Settings, factory: sessionmaker[Session], store: ArtifactStore
) -> str:
    log.info("job %s (%s) attempt %d started", claim.job_id, kind, claim.attempt)
    # A re-run starts clean: whatever an earlier attempt published is replaced.
    store.delete_prefix(job_key(claim.tenant_id, claim.job_id, ""))
    progress = Progress(
        factory, claim, interval=settings.progress_interval_seconds, heartbeat=settings.heartbeat_seconds
    )
    try:
        with heartbeat(progress), store.scratch() as scratch:
            body(JobRun(claim, settings, factory, store, Path(scratch), progress))
    except Superseded as exc:
        log.warning("%s; stopping", exc)
        return "superseded"
    except Cancelled:
        log.info("job %s cancelled", claim.job_id)
        return _end(factory, claim, JobStatus.cancelled, message="cancelled while running")
    except TRANSIENT:
        raise
    except SoftTimeLimitExceeded:
        return _fail(
            factory,
            store,
            claim,
            settings,
            f"time limit exceeded ({settings.task_soft_time_limit} s, task_soft_time_limit)",
        )
    except USER_ERRORS as exc:
        log.info("job %s failed: %s", claim.job_id, exc)
        return _fail(factory, store, claim, settings, str(exc))
    except Exception as exc:
        if out_of_space(exc):
            # Not retried: only an operator can free space; the user resubmits then. Said plainly, since
            # the raw error ("SafetensorError: ... os error 28") does not name the artifact store.
            log.error("job %s: the artifact store is out of space: %s", claim.job_id, exc)
            return _fail(
                factory,
                store,
                claim,
                settings,
                f"the artifact store is out of space ({type(exc).__name__}: {exc}); "
                "free space there and submit the job again",
            )
        log.exception("job %s failed", claim.job_id)
        return _fail(factory, store, claim, settings, f"{type(exc).__name__}: {exc}")
    log.info("job %s succeeded", claim.job_id)
    return "succeeded"


def _fail(factory: sessionmaker[Session], store: ArtifactStore, claim: Claim, settings: Settings, error: str) -> str:
    """Mark the job failed and delete what this attempt published: no result row refers to it.

    The error is stored as the tenant may read it (``public_errors``); the log keeps the full one.
    """
    error = public_error(
        error, artifact_dir=settings.artifact_dir, tenant_id=claim.tenant_id, model_source=claim.model_source
    )
    outcome = _end(factory, claim, JobStatus.failed, error=error)
    if outcome == JobStatus.failed.value:  # still ours (not superseded): the artifacts are ours to drop
        try:
            store.delete_prefix(job_key(claim.tenant_id, claim.job_id, ""))
        except OSError as exc:
            log.warning("job %s: partial artifacts not deleted (%s)", claim.job_id, exc)
    return outcome


def _end(
    factory: sessionmaker[Session],
    claim: Claim,
    status: JobStatus,
    *,
    error: str | None = None,
    message: str | None = None,
) -> str:
    try:
        finish_job(factory, claim, status, error=error, message=message)
    except Superseded as exc:
        log.warning("%s; outcome %s dropped", exc, status.value)
        return "superseded"
    return status.value
