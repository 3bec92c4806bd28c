"""Schema of audit log entries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AuditAction = Literal["model.register", "dataset.upload", "job.submit", "job.cancel", "webhook.secret.rotate"]


class AuditLogRead(BaseModel):
    """Who did what, when: one state-changing request of the tenant."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    action: AuditAction
    resource_type: str = Field(description="model, dataset, or the job kind (audit, evaluation, ...).")
    resource_id: uuid.UUID | None
    key_id: uuid.UUID | None = Field(description="The API key that made the request.")
    key_prefix: str = Field(description="Its display prefix, as `ssah keys list` shows it.")
    details: dict[str, Any] = Field(description="What was asked: name and source, file hash and rows, job kind.")
    request_id: str | None = Field(
        description="The id the server gave the request (its X-Request-ID answer header, as in the service logs)."
    )
    client_request_id: str | None = Field(description="The X-Request-ID the client sent, if any (not checked).")
    created_at: datetime
