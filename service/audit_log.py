"""The audit log: one row per state-changing request (register, upload, submit, cancel, delete), and per
job the retention sweep deleted.

Rows are added in the same transaction as the change they describe, so a request that rolls back
leaves no entry, and an idempotent replay (which changes nothing) adds none.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.auth import Principal
from service.models import AuditLogEntry
from service.queries import paginate

if TYPE_CHECKING:  # the worker writes entries too (record_system) and must never load fastapi
    from fastapi import Request

MAX_REQUEST_ID = 200  # the client's X-Request-ID: keep what fits the column


def record(
    session: Session,
    request: Request,
    principal: Principal,
    *,
    action: str,
    resource_type: str,
    resource_id: uuid.UUID | None,
    details: dict[str, Any] | None = None,
) -> AuditLogEntry:
    """Add an entry for ``principal`` doing ``action`` to a resource; the caller's transaction commits it."""
    client_request_id = getattr(request.state, "client_request_id", None)
    entry = AuditLogEntry(
        tenant_id=principal.tenant_id,
        key_id=principal.key_id,
        key_prefix=principal.key_prefix,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details or {},
        # Ours, never the client's: a client must not be able to make its entry claim another request's id.
        request_id=getattr(request.state, "request_id", None),
        client_request_id=client_request_id[:MAX_REQUEST_ID] if client_request_id else None,
    )
    session.add(entry)
    return entry


SYSTEM_KEY_PREFIX = "system"  # entries the service wrote itself (the retention sweep), not a key's request


def record_system(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    action: str,
    resource_type: str,
    resource_id: uuid.UUID | None,
    details: dict[str, Any] | None = None,
) -> AuditLogEntry:
    """Add an entry for something the service did on its own (no key, no request); the caller commits it."""
    entry = AuditLogEntry(
        tenant_id=tenant_id,
        key_id=None,
        key_prefix=SYSTEM_KEY_PREFIX,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details or {},
    )
    session.add(entry)
    return entry


def list_entries(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    limit: int,
    offset: int,
    action: str | None = None,
    resource_id: uuid.UUID | None = None,
) -> tuple[Sequence[AuditLogEntry], int]:
    """One page of the tenant's audit log, newest first, and how many entries match."""
    stmt = sa.select(AuditLogEntry).where(AuditLogEntry.tenant_id == tenant_id)
    if action is not None:
        stmt = stmt.where(AuditLogEntry.action == action)
    if resource_id is not None:
        stmt = stmt.where(AuditLogEntry.resource_id == resource_id)
    return paginate(
        session, stmt.order_by(AuditLogEntry.created_at.desc(), AuditLogEntry.id.desc()), limit=limit, offset=offset
    )
