"""Schemas for pipelines: labels, gates, callbacks, webhook deliveries and checkpoint series."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

LABEL_KEY = r"^[A-Za-z0-9][A-Za-z0-9_.\-/]*$"
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=LABEL_KEY)]
LabelValue = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]
MAX_LABELS = 32
Labels = Annotated[
    dict[LabelKey, LabelValue],
    Field(
        max_length=MAX_LABELS,
        description=f"Free string labels (at most {MAX_LABELS}; keys of letters, digits and _.-/, up to 63 "
        "characters; values up to 256), filterable with ?label=key:value.",
        examples=[{"checkpoint_step": "12000", "git_sha": "3f2a9c1"}],
    ),
]
GatePath = Annotated[str, StringConstraints(max_length=200, pattern=r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")]


class GateRule(BaseModel):
    """Bounds on one number of the result; ``max_change`` compares it with the same path of ``against``."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = Field(None, allow_inf_nan=False, description="The value must be at least this.")
    max: float | None = Field(None, allow_inf_nan=False, description="The value must be at most this.")
    max_change: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="|value - against's value| must be at most this."
    )
    against: uuid.UUID | None = Field(None, description="A job of yours of the same kind; needed by max_change.")

    @model_validator(mode="after")
    def _complete(self) -> GateRule:
        if self.min is None and self.max is None and self.max_change is None:
            raise ValueError("a gate rule needs min, max or max_change")
        if (self.max_change is None) != (self.against is None):
            raise ValueError("max_change and against go together")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        return self


Gate = Annotated[
    dict[GatePath, GateRule],
    Field(
        min_length=1,
        max_length=32,
        description="Thresholds on the result, by dotted path; the verdict is the job's gate.passed.",
        examples=[{"safety.asr": {"max": 0.1}, "safety.over_refusal": {"max": 0.2}}],
    ),
]


class JobIntegrations(BaseModel):
    """What a pipeline attaches to a job: labels, a gate and a callback."""

    model_config = ConfigDict(extra="forbid")

    labels: Labels = Field(default_factory=dict)
    gate: Gate | None = None
    callback_url: str | None = Field(
        None,
        max_length=2000,
        description="POSTed the job resource, signed (SSAH-Signature), once the job ends; see docs/security.md.",
        examples=["https://ci.example.com/hooks/ssah"],
    )


INTEGRATION_FIELDS = tuple(JobIntegrations.model_fields)


class GateCheck(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str
    value: float | None
    rule: dict[str, Any]
    passed: bool
    reason: str


class GateRead(BaseModel):
    """A job's gate: its rules and, once the job succeeded, the verdict and each check."""

    rules: dict[str, Any]
    passed: bool | None = Field(description="null until the job succeeded (and for a failed or cancelled job).")
    checks: list[GateCheck]


class WebhookSecretRead(BaseModel):
    secret: str = Field(description="Shown once: signs every webhook of the tenant (HMAC-SHA256).")
    created_at: datetime


class WebhookSecretStatus(BaseModel):
    configured: bool
    created_at: datetime | None


class WebhookDeliveryRead(BaseModel):
    """One webhook: a job's ending POSTed to its callback, with its tries."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    job_id: uuid.UUID
    event: str = Field(description="job.succeeded, job.failed or job.cancelled.")
    url: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="When the next try is due; null once it ended.")
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="after")
    def _no_next_when_done(self) -> WebhookDeliveryRead:
        if self.status != "pending":
            self.next_attempt_at = None
        return self


class SeriesCreate(BaseModel):
    """A timeline of one model family's checkpoints: audits and evaluations ordered by a label."""

    model_config = ConfigDict(extra="forbid")

    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict,
        max_length=MAX_LABELS,
        description="Jobs whose labels (the job's own over its model's) include all of these.",
        examples=[{"run": "sft-2025-06"}],
    )
    model_ids: list[uuid.UUID] | None = Field(None, max_length=1000, description="Only jobs on these models.")
    order_by: LabelKey = Field(
        description="The label that orders the checkpoints: numerically when every value is a number.",
        examples=["checkpoint_step"],
    )
    compare: bool = Field(True, description="Queue a comparison for each pair of consecutive audits that has none yet.")


class SeriesPoint(BaseModel):
    value: str = Field(description="The order_by label's value.")
    model_id: uuid.UUID | None
    audit_id: uuid.UUID | None = Field(description="The newest succeeded audit at this value.")
    evaluation_id: uuid.UUID | None = Field(description="The newest succeeded evaluation without ablation.")
    classes: dict[str, Any] | None = Field(description="Units and shares of each class (SCU, UCU, CU, RU).")
    safety: dict[str, Any] | None = Field(description="asr and over_refusal of the evaluation.")


class SeriesTransition(BaseModel):
    before: str
    after: str
    before_audit_id: uuid.UUID
    after_audit_id: uuid.UUID
    comparison_id: uuid.UUID | None
    status: str = Field(description="The comparison's status; 'none' when compare was false and none existed.")
    crosstab: dict[str, Any] | None = Field(description="Role transfer once the comparison has succeeded.")


class SeriesRead(BaseModel):
    order_by: str
    labels: dict[str, str]
    points: list[SeriesPoint]
    transitions: list[SeriesTransition]


class RetentionRead(BaseModel):
    """How long the tenant's finished jobs are kept."""

    retention_days: int | None = Field(
        description="Finished jobs older than this many days (by finished_at) are deleted with their artifacts; "
        "null: kept until deleted."
    )


class RetentionUpdate(BaseModel):
    retention_days: int | None = Field(
        ge=1, le=36_500, description="Days to keep finished jobs; null turns retention off."
    )
