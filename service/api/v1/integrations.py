"""What a pipeline attaches to a job (labels, gate, callback), checked before the job is queued."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.orm import Session

from service import gates, queries
from service.auth import Principal
from service.errors import Unprocessable
from service.models import Tenant
from service.schemas.integrations import INTEGRATION_FIELDS
from service.settings import Settings
from service.webhooks import CallbackRefused, check_callback_url


class CallbackUrlRefused(Unprocessable):
    title, slug = "Callback URL Refused", "callback-url-refused"


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def job_integrations(session: Session, settings: Settings, principal: Principal, *, kind: str, body: BaseModel):
    """The labels, gate (as stored) and callback URL of a job body; 422 naming the field for what cannot hold."""
    labels: dict[str, str] = getattr(body, "labels", None) or {}
    callback_url: str | None = getattr(body, "callback_url", None)
    rules: dict[str, Any] | None = getattr(body, "gate", None)
    if callback_url is not None:
        try:
            check_callback_url(callback_url, allowed_hosts=settings.webhook_allowed_hosts)
        except CallbackRefused as exc:
            error = {"loc": "body.callback_url", "msg": str(exc), "type": "callback_refused"}
            raise CallbackUrlRefused(f"body.callback_url: {exc}", extra={"errors": [error]}) from None
        secret = session.scalar(sa.select(Tenant.webhook_secret).where(Tenant.id == principal.tenant_id))
        if secret is None:
            raise Unprocessable.field(
                "body.callback_url",
                "your tenant has no webhook secret to sign with yet: create one with POST /v1/webhook-secret",
            )
    gate = None
    if rules is not None:
        for path, rule in rules.items():
            loc = f"body.gate.{path}"
            if (wrong := gates.path_error(kind, path)) is not None:
                raise Unprocessable.field(loc, wrong)
            if rule.against is not None:
                other = queries.get_job(session, tenant_id=principal.tenant_id, job_id=rule.against)
                if other is None:
                    raise Unprocessable.field(f"{loc}.against", f"no job {rule.against}")
                if other.kind != kind:
                    raise Unprocessable.field(
                        f"{loc}.against", f"job {rule.against} is {_a(other.kind)}; compare {_a(kind)} with {_a(kind)}"
                    )
        gate = gates.stored({path: rule.model_dump(mode="json", exclude_none=True) for path, rule in rules.items()})
    return labels, gate, callback_url


def engine_params(body: BaseModel) -> dict[str, Any]:
    """The stored parameters of a job body: everything but labels, gate and callback (columns of their own)."""
    return body.model_dump(mode="json", exclude=set(INTEGRATION_FIELDS))
