"""Datasets: uploaded files of prompts or training records, content-hashed and size-limited."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from service import audit_log, queries, retention
from service.api.deps import IdempotencyDep, PageDep, PrincipalDep, SessionDep, make_page
from service.datasets import check_name, infer_format, store_upload
from service.errors import NotFound
from service.models import Dataset
from service.schemas import examples
from service.schemas.common import Page, problem_responses
from service.schemas.examples import request_examples
from service.schemas.resources import DatasetFormat, DatasetRead

MAX_NAME = 200  # datasets.name; an upload without a name is named after its file

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=problem_responses(401, 422))


@router.post(
    "",
    status_code=201,
    response_model=DatasetRead,
    responses=problem_responses(409, 413),
    openapi_extra=request_examples(examples.DATASET, "multipart/form-data"),
)
def create_dataset(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    idem: IdempotencyDep,
    file: Annotated[UploadFile, File(description="JSONL, CSV, JSON (a list) or plain text, UTF-8.")],
    name: Annotated[str | None, Form(min_length=1, max_length=200)] = None,
    format: Annotated[DatasetFormat | None, Form(description="Default: from the file extension.")] = None,
):
    """Upload a dataset file (multipart); answers 201 with its row count and sha256."""
    settings = request.app.state.settings
    # Before anything is stored: a name the table cannot hold must not leave a file behind.
    check_name(name, "body.name")
    check_name(file.filename, "body.file", max_length=MAX_NAME if name is None else 10_000)
    fmt = infer_format(file.filename, format)
    stored = store_upload(
        file.file,
        artifact_dir=settings.artifact_dir,
        tenant_id=principal.tenant_id,
        fmt=fmt,
        max_bytes=settings.max_upload_bytes,
        max_rows=settings.max_dataset_rows,
    )
    display_name = name or file.filename or stored.sha256[:12]
    if (replay := idem.replay({"name": display_name, "format": fmt, "sha256": stored.sha256})) is not None:
        return replay
    dataset = Dataset(
        id=uuid.uuid4(),
        tenant_id=principal.tenant_id,
        name=display_name,
        format=fmt,
        rows=stored.rows,
        size_bytes=stored.size_bytes,
        sha256=stored.sha256,
        path=stored.relative_path,
    )
    session.add(dataset)
    session.flush()
    audit_log.record(
        session,
        request,
        principal,
        action="dataset.upload",
        resource_type="dataset",
        resource_id=dataset.id,
        details={
            "name": display_name,
            "format": fmt,
            "sha256": stored.sha256,
            "rows": stored.rows,
            "size_bytes": stored.size_bytes,
        },
    )
    return idem.respond(201, DatasetRead.model_validate(dataset), location=f"/v1/datasets/{dataset.id}")


@router.get("", response_model=Page[DatasetRead])
def list_datasets(request: Request, session: SessionDep, principal: PrincipalDep, page: PageDep):
    """List the tenant's datasets, newest first."""
    items, total = queries.list_datasets(session, tenant_id=principal.tenant_id, limit=page.limit, offset=page.offset)
    return make_page(request, [DatasetRead.model_validate(d) for d in items], total, page)


@router.get("/{dataset_id}", response_model=DatasetRead, responses=problem_responses(404))
def get_dataset(dataset_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Get one dataset's metadata."""
    dataset = queries.get_dataset(session, tenant_id=principal.tenant_id, dataset_id=dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    return DatasetRead.model_validate(dataset)


@router.delete("/{dataset_id}", status_code=204, responses=problem_responses(404, 409))
def delete_dataset(request: Request, dataset_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Delete a dataset and its file (409 while a queued or running job uses it)."""
    dataset = queries.get_dataset(session, tenant_id=principal.tenant_id, dataset_id=dataset_id)
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}")
    details = {"name": dataset.name, "sha256": dataset.sha256}
    retention.delete_dataset(session, request.app.state.settings, dataset=dataset)
    audit_log.record(
        session,
        request,
        principal,
        action="dataset.delete",
        resource_type="dataset",
        resource_id=dataset_id,
        details=details,
    )
    return Response(status_code=204)
