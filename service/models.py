"""SQLAlchemy 2 typed models: the tables of the service, portable between PostgreSQL and SQLite."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so Alembic autogenerate and downgrades refer to the same objects.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


class UtcDateTime(sa.TypeDecorator):
    """A timezone-aware datetime that also comes back aware from SQLite, which drops the zone."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a timezone-aware column")
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSONType}


class JobKind(str, enum.Enum):
    audit = "audit"
    evaluation = "evaluation"
    finetune = "finetune"
    comparison = "comparison"
    probe = "probe"


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


def _in(column: str, values: type[enum.Enum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Kept in plain text: the service must sign with it (HMAC), so a hash would not do (docs/security.md).
    webhook_secret: Mapped[str | None] = mapped_column(sa.String(100))
    webhook_secret_created_at: Mapped[datetime | None]
    # Finished jobs older than this many days are deleted with their artifacts (service/retention.py); None: kept.
    retention_days: Mapped[int | None]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    # Shown to people so they can tell keys apart; never enough to authenticate.
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    tenant: Mapped[Tenant] = relationship()


class ModelSource(Base):
    """A registered model: a hub id, a local path, a GGUF file or ``builtin:<name>``."""

    __tablename__ = "models"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "name", name="uq_models_tenant_id_name"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(200))
    source: Mapped[str] = mapped_column(sa.String(1000))
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=sa.text("'{}'"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (sa.CheckConstraint("format IN ('jsonl', 'csv', 'json', 'txt')", name="format"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    format: Mapped[str] = mapped_column(sa.String(8))
    rows: Mapped[int]
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    # Relative to Settings.artifact_dir, so the directory can move between machines.
    path: Mapped[str] = mapped_column(sa.String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Job(Base):
    """One unit of long work (audit, evaluation, fine-tune, comparison) and its lifecycle."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.CheckConstraint(_in("kind", JobKind), name="kind"),
        sa.CheckConstraint(_in("status", JobStatus), name="status"),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
        sa.Index("ix_jobs_tenant_id_kind_created_at", "tenant_id", "kind", "created_at"),
        sa.Index("ix_jobs_status_enqueued_at", "status", "enqueued_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16), default=JobStatus.queued.value)
    progress: Mapped[float] = mapped_column(default=0.0)
    progress_message: Mapped[str | None] = mapped_column(sa.String(500))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text)
    model_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("models.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # NULL until the broker accepted the message; enqueue_pending() retries those rows.
    enqueued_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=sa.text("'{}'"))
    # POSTed the job resource once it ends (service/webhooks.py).
    callback_url: Mapped[str | None] = mapped_column(sa.String(2000))
    # {"rules": {path: rule}, "passed": null until the job succeeded, "checks": [...]} (service/gates.py).
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Bumped by SQLAlchemy on every UPDATE; feeds the ETag and guards concurrent writers.
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}


class UnitMap(Base):
    """The unit map an audit produced: the engine's summary plus the full artifact on disk."""

    __tablename__ = "unit_maps"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    summary: Mapped[dict[str, Any]]
    artifact_uri: Mapped[str | None] = mapped_column(sa.String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Score(Base):
    __tablename__ = "scores"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    protocol_hash: Mapped[str] = mapped_column(sa.String(64))
    metrics: Mapped[dict[str, Any]]
    records_uri: Mapped[str | None] = mapped_column(sa.String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Verdict values a record's columns hold: the headline refusal list's and the judge's.
RECORD_VERDICTS = ("success", "short", "refusal")
JUDGE_VERDICTS = ("unsafe", "safe", "unparsed")


class EvaluationRecord(Base):
    """One prompt x condition (x suffix) of an evaluation: the engine's record, with what the API filters on."""

    __tablename__ = "evaluation_records"
    __table_args__ = (
        # Also the index of every read: one job's records in order.
        sa.UniqueConstraint("job_id", "position", name="uq_evaluation_records_job_id_position"),
        sa.CheckConstraint("prompt_set IN ('harmful', 'harmless')", name="prompt_set"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    # Order in evaluation.json (harmful, then harmless): pages follow it.
    position: Mapped[int]
    prompt_set: Mapped[str] = mapped_column(sa.String(16))  # the record's "set": harmful or harmless
    condition: Mapped[str] = mapped_column(sa.String(16))
    category: Mapped[str | None] = mapped_column(sa.Text)
    # The headline refusal list's verdict (success / short / refusal); NULL when nothing was generated.
    verdict: Mapped[str | None] = mapped_column(sa.String(16))
    # unsafe / safe / unparsed; NULL when no judge labelled this record.
    judge_verdict: Mapped[str | None] = mapped_column(sa.String(16))
    # The record exactly as the engine wrote it (prompt, rendered prompt, response, every verdict, margin, judge).
    record: Mapped[dict[str, Any]]


class FinetuneResult(Base):
    __tablename__ = "finetune_results"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    loss_curve: Mapped[dict[str, Any]]
    output_model_uri: Mapped[str | None] = mapped_column(sa.String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Comparison(Base):
    """How units changed role between two audits (before and after a fine-tune)."""

    __tablename__ = "comparisons"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    crosstab: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProbeResult(Base):
    """What a probe job measured: per-layer distances, the refusal direction's summary, unit writes."""

    __tablename__ = "probe_results"

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    summary: Mapped[dict[str, Any]]
    # The direction tensors (one per layer) on disk, relative to the artifact directory.
    artifact_uri: Mapped[str | None] = mapped_column(sa.String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(Base):
    """The first answer to a POST carrying an ``Idempotency-Key``, replayed on retries."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "key", name="uq_idempotency_keys_tenant_id_key"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(sa.String(255))
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    response_status: Mapped[int]
    response_body: Mapped[dict[str, Any]]
    location: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AuditLogEntry(Base):
    """Who (tenant, API key) did what to which resource, and when; written in the action's transaction."""

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_log_tenant_id_created_at", "tenant_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    # The key survives as a prefix even if its row is ever deleted.
    key_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("api_keys.id", ondelete="SET NULL"))
    key_prefix: Mapped[str] = mapped_column(sa.String(16))
    action: Mapped[str] = mapped_column(sa.String(32))
    resource_type: Mapped[str] = mapped_column(sa.String(32))
    resource_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    request_id: Mapped[str | None] = mapped_column(sa.String(200))  # made by the server (X-Request-ID it answered)
    client_request_id: Mapped[str | None] = mapped_column(sa.String(200))  # what the client sent, if anything
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """The POST of a finished job to its ``callback_url``: retried with backoff until it is answered 2xx."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
        sa.UniqueConstraint("job_id", "event", name="uq_webhook_deliveries_job_id_event"),
        sa.Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_tenant_id_created_at", "tenant_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(sa.String(32))  # job.succeeded, job.failed, job.cancelled
    url: Mapped[str] = mapped_column(sa.String(2000))
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    # When a sender may take it next; a sender leases it by moving this past its own timeout.
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(sa.String(1000))
    last_attempt_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
