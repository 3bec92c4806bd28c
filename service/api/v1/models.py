"""Registered models: the sources audits and evaluations run on."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import IntegrityError

from service import audit_log, queries, retention
from service.api.deps import IdempotencyDep, PageDep, PrincipalDep, SessionDep, make_page
from service.api.v1.common import LabelQuery, check_model_source, label_filters
from service.errors import Conflict, NotFound
from service.models import ModelSource
from service.schemas import examples
from service.schemas.common import Page, problem_responses
from service.schemas.examples import request_examples
from service.schemas.resources import ModelCreate, ModelRead

router = APIRouter(prefix="/models", tags=["models"], responses=problem_responses(401, 422))


@router.post(
    "",
    status_code=201,
    response_model=ModelRead,
    responses=problem_responses(409, 413),
    openapi_extra=request_examples(examples.MODEL),
)
def create_model(
    request: Request, body: ModelCreate, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep
):
    """Register a model source (allowed by the deployment's model policy) under a name unique to the tenant."""
    if (replay := idem.replay(body)) is not None:
        return replay
    check_model_source(request.app.state.settings, principal, body.source, loc="body.source")
    model = ModelSource(
        id=uuid.uuid4(), tenant_id=principal.tenant_id, name=body.name, source=body.source, labels=body.labels
    )
    try:
        with session.begin_nested():
            session.add(model)
    except IntegrityError as exc:
        raise Conflict(f"a model named {body.name!r} already exists") from exc
    audit_log.record(
        session,
        request,
        principal,
        action="model.register",
        resource_type="model",
        resource_id=model.id,
        details={"name": body.name, "source": body.source},
    )
    return idem.respond(201, ModelRead.model_validate(model), location=f"/v1/models/{model.id}")


@router.get("", response_model=Page[ModelRead])
def list_models(
    request: Request, session: SessionDep, principal: PrincipalDep, page: PageDep, label: LabelQuery = None
):
    """List the tenant's registered models, newest first, filtered by labels."""
    items, total = queries.list_models(
        session, tenant_id=principal.tenant_id, limit=page.limit, offset=page.offset, labels=label_filters(label)
    )
    return make_page(request, [ModelRead.model_validate(m) for m in items], total, page)


@router.get("/{model_id}", response_model=ModelRead, responses=problem_responses(404))
def get_model(model_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Get one registered model."""
    model = queries.get_model(session, tenant_id=principal.tenant_id, model_id=model_id)
    if model is None:
        raise NotFound(f"no model {model_id}")
    return ModelRead.model_validate(model)


@router.delete("/{model_id}", status_code=204, responses=problem_responses(404, 409))
def delete_model(request: Request, model_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Delete a registered model (409 while a queued or running job uses it); its finished jobs are kept."""
    model = queries.get_model(session, tenant_id=principal.tenant_id, model_id=model_id)
    if model is None:
        raise NotFound(f"no model {model_id}")
    details = {"name": model.name, "source": model.source}
    retention.delete_model(session, model=model)
    audit_log.record(
        session, request, principal, action="model.delete", resource_type="model", resource_id=model_id, details=details
    )
    return Response(status_code=204)
