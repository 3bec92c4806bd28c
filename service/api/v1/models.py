"""Registered models: the sources audits and evaluations run on."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from sqlalchemy.exc import IntegrityError

from service import queries
from service.api.deps import IdempotencyDep, PageDep, PrincipalDep, SessionDep, make_page
from service.errors import Conflict, NotFound
from service.models import ModelSource
from service.schemas.common import Page, problem_responses
from service.schemas.resources import ModelCreate, ModelRead

router = APIRouter(prefix="/models", tags=["models"], responses=problem_responses(401, 422))


@router.post("", status_code=201, response_model=ModelRead, responses=problem_responses(409))
def create_model(body: ModelCreate, session: SessionDep, principal: PrincipalDep, idem: IdempotencyDep):
    """Register a model source under a name unique to the tenant."""
    if (replay := idem.replay(body)) is not None:
        return replay
    model = ModelSource(id=uuid.uuid4(), tenant_id=principal.tenant_id, name=body.name, source=body.source)
    try:
        with session.begin_nested():
            session.add(model)
    except IntegrityError as exc:
        raise Conflict(f"a model named {body.name!r} already exists") from exc
    return idem.respond(201, ModelRead.model_validate(model), location=f"/v1/models/{model.id}")


@router.get("", response_model=Page[ModelRead])
def list_models(request: Request, session: SessionDep, principal: PrincipalDep, page: PageDep):
    """List the tenant's registered models, newest first."""
    items, total = queries.list_models(session, tenant_id=principal.tenant_id, limit=page.limit, offset=page.offset)
    return make_page(request, [ModelRead.model_validate(m) for m in items], total, page)


@router.get("/{model_id}", response_model=ModelRead, responses=problem_responses(404))
def get_model(model_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Get one registered model."""
    model = queries.get_model(session, tenant_id=principal.tenant_id, model_id=model_id)
    if model is None:
        raise NotFound(f"no model {model_id}")
    return ModelRead.model_validate(model)
