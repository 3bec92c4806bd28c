"""Webhooks: the tenant's signing secret and the record of every delivery."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request

from service import audit_log
from service.api.deps import PageDep, PrincipalDep, SessionDep, make_page
from service.models import Tenant, WebhookDelivery
from service.queries import paginate
from service.schemas.common import Page, problem_responses
from service.schemas.integrations import WebhookDeliveryRead, WebhookSecretRead, WebhookSecretStatus
from service.webhooks import rotate_secret

router = APIRouter(tags=["webhooks"], responses=problem_responses(401, 422))


@router.post("/webhook-secret", status_code=201, response_model=WebhookSecretRead)
def rotate_webhook_secret(request: Request, session: SessionDep, principal: PrincipalDep):
    """Create or replace the tenant's webhook signing secret; it is shown once, and the old one stops at once."""
    secret, created_at = rotate_secret(session, tenant_id=principal.tenant_id)
    audit_log.record(
        session, request, principal, action="webhook.secret.rotate", resource_type="tenant", resource_id=None
    )
    return WebhookSecretRead(secret=secret, created_at=created_at)


@router.get("/webhook-secret", response_model=WebhookSecretStatus)
def get_webhook_secret(session: SessionDep, principal: PrincipalDep):
    """Say whether the tenant has a webhook secret and since when (never the secret itself)."""
    created_at = session.scalar(sa.select(Tenant.webhook_secret_created_at).where(Tenant.id == principal.tenant_id))
    return WebhookSecretStatus(configured=created_at is not None, created_at=created_at)


@router.get("/webhook-deliveries", response_model=Page[WebhookDeliveryRead])
def list_webhook_deliveries(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    page: PageDep,
    job_id: Annotated[uuid.UUID | None, Query()] = None,
    status: Annotated[Literal["pending", "succeeded", "failed"] | None, Query()] = None,
):
    """List the tenant's webhook deliveries, newest first: status code, tries, last error."""
    stmt = sa.select(WebhookDelivery).where(WebhookDelivery.tenant_id == principal.tenant_id)
    if job_id is not None:
        stmt = stmt.where(WebhookDelivery.job_id == job_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    order = (WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    items, total = paginate(session, stmt.order_by(*order), limit=page.limit, offset=page.offset)
    return make_page(request, [WebhookDeliveryRead.model_validate(d) for d in items], total, page)
