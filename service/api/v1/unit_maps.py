"""Unit maps of succeeded audits: summary, per-layer counts, the figures' arrays and the full artifact."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from service import queries
from service.api.deps import PageDep, PrincipalDep, SessionDep, make_page
from service.api.v1.common import load_job, require_succeeded
from service.artifacts import tenant_file
from service.auth import Principal
from service.errors import NotFound
from service.models import UnitMap
from service.schemas.common import Page, binary_response, problem_responses
from service.schemas.results import LayerRead, UnitMapRead
from service.schemas.unit_map_arrays import LayerNeuronsRead, UnitMapArraysRead
from ssah_engine.unitmap_arrays import DEFAULT_BINS, MapArrays, figure_data, layer_neurons, read_arrays

router = APIRouter(
    prefix="/audits/{audit_id}/unit-map", tags=["unit maps"], responses=problem_responses(401, 404, 409, 422)
)


def _unit_map(session: Session, principal: Principal, audit_id: uuid.UUID) -> UnitMap:
    job = require_succeeded(load_job(session, principal, audit_id, kind="audit"))
    unit_map = queries.get_unit_map(session, job_id=job.id)
    if unit_map is None:
        raise NotFound(f"audit {audit_id} stored no unit map")
    return unit_map


@router.get("", response_model=UnitMapRead)
def get_unit_map(request: Request, audit_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Get the summary of a succeeded audit's unit map (units and fractions per class)."""
    unit_map = _unit_map(session, principal, audit_id)
    summary = unit_map.summary
    available = (
        tenant_file(request.app.state.settings.artifact_dir, principal.tenant_id, unit_map.artifact_uri) is not None
    )
    return UnitMapRead(
        job_id=unit_map.job_id,
        classes=summary.get("classes", {}),
        layer_count=len(summary.get("layers", [])),
        config=summary.get("config", {}),
        model=summary.get("model"),
        data=summary.get("data"),
        artifact_available=available,
        created_at=unit_map.created_at,
    )


@router.get("/layers", response_model=Page[LayerRead])
def list_unit_map_layers(
    request: Request, audit_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, page: PageDep
):
    """List per-layer unit counts of each class, a page of layers at a time."""
    layers = _unit_map(session, principal, audit_id).summary.get("layers", [])
    chunk = layers[page.offset : page.offset + page.limit]
    items = [
        {**(layer if isinstance(layer, dict) else {"counts": layer}), "index": page.offset + i}
        for i, layer in enumerate(chunk)
    ]
    return make_page(request, items, len(layers), page)


def _arrays(request: Request, principal: Principal, unit_map: UnitMap, audit_id: uuid.UUID) -> MapArrays:
    path = tenant_file(request.app.state.settings.artifact_dir, principal.tenant_id, unit_map.artifact_uri)
    if path is None:
        raise NotFound(f"the unit map file of audit {audit_id} is not available")
    try:
        return read_arrays(Path(path), space=unit_map.summary.get("space"))
    except (OSError, ValueError, KeyError) as error:
        raise NotFound(f"the unit map file of audit {audit_id} cannot be read: {error}") from None


@router.get("/arrays", response_model=UnitMapArraysRead)
def get_unit_map_arrays(
    request: Request,
    audit_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    bins: Annotated[int, Query(ge=8, le=256, description="Cells per axis of the neurons' (z_S, z_U) grid.")] = (
        DEFAULT_BINS
    ),
):
    """Get the arrays the unit-map figures draw: neurons binned on (z_S, z_U) per class, every head, cut lines."""
    unit_map = _unit_map(session, principal, audit_id)
    payload = figure_data(_arrays(request, principal, unit_map, audit_id), bins=bins)
    cuts = unit_map.summary.get("config", {}).get("cuts") or {}
    return {**payload, "job_id": unit_map.job_id, "cut_fractions": cuts}


@router.get("/layers/{layer}/neurons", response_model=LayerNeuronsRead)
def get_unit_map_layer_neurons(
    request: Request, audit_id: uuid.UUID, layer: int, session: SessionDep, principal: PrincipalDep
):
    """Get one layer's neurons with their labels and z-scores (the neuron-level zoom)."""
    unit_map = _unit_map(session, principal, audit_id)
    arrays = _arrays(request, principal, unit_map, audit_id)
    if not 0 <= layer < arrays.num_layers:
        raise NotFound(f"audit {audit_id} has layers 0 to {arrays.num_layers - 1}, not {layer}")
    return {**layer_neurons(arrays, layer), "job_id": unit_map.job_id}


@router.get(
    "/artifact",
    response_class=FileResponse,
    responses=binary_response("application/octet-stream", "The unit map file."),
)
def download_unit_map_artifact(request: Request, audit_id: uuid.UUID, session: SessionDep, principal: PrincipalDep):
    """Download the full unit map file written by the audit."""
    unit_map = _unit_map(session, principal, audit_id)
    path = tenant_file(request.app.state.settings.artifact_dir, principal.tenant_id, unit_map.artifact_uri)
    if path is None:
        raise NotFound(f"the unit map file of audit {audit_id} is not available")
    return FileResponse(path, media_type="application/octet-stream", filename=path.name)
