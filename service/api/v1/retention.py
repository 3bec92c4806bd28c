"""The tenant's retention setting: how many days finished jobs are kept before the sweep deletes them."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request

from service import audit_log
from service.api.deps import PrincipalDep, SessionDep
from service.models import Tenant
from service.schemas import examples
from service.schemas.common import problem_responses
from service.schemas.examples import request_examples
from service.schemas.integrations import RetentionRead, RetentionUpdate

router = APIRouter(prefix="/retention", tags=["retention"], responses=problem_responses(401, 422))


@router.get("", response_model=RetentionRead)
def get_retention(session: SessionDep, principal: PrincipalDep):
    """Say how many days the tenant's finished jobs are kept (null: until deleted)."""
    days = session.scalar(sa.select(Tenant.retention_days).where(Tenant.id == principal.tenant_id))
    return RetentionRead(retention_days=days)


@router.put("", response_model=RetentionRead, openapi_extra=request_examples(examples.RETENTION))
def update_retention(request: Request, body: RetentionUpdate, session: SessionDep, principal: PrincipalDep):
    """Set how many days finished jobs are kept; a worker's sweep then deletes older ones with their artifacts."""
    tenant = session.get(Tenant, principal.tenant_id)
    assert tenant is not None  # the key's tenant: keys are deleted with it
    before, tenant.retention_days = tenant.retention_days, body.retention_days
    audit_log.record(
        session,
        request,
        principal,
        action="retention.set",
        resource_type="tenant",
        resource_id=principal.tenant_id,
        details={"retention_days": body.retention_days, "before": before},
    )
    return RetentionRead(retention_days=tenant.retention_days)
