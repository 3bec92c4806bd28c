"""The audit log: who registered, uploaded, submitted or cancelled what, and when."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request

from service import audit_log
from service.api.deps import PageDep, PrincipalDep, SessionDep, make_page
from service.schemas.audit_log import AuditAction, AuditLogRead
from service.schemas.common import Page, problem_responses

router = APIRouter(prefix="/audit-log", tags=["audit log"], responses=problem_responses(401, 422))


@router.get("", response_model=Page[AuditLogRead])
def list_audit_log(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    page: PageDep,
    action: Annotated[AuditAction | None, Query()] = None,
    resource_id: Annotated[uuid.UUID | None, Query()] = None,
):
    """List the tenant's audit log, newest first, filtered by action and resource."""
    items, total = audit_log.list_entries(
        session,
        tenant_id=principal.tenant_id,
        limit=page.limit,
        offset=page.offset,
        action=action,
        resource_id=resource_id,
    )
    return make_page(request, [AuditLogRead.model_validate(e) for e in items], total, page)
