"""Result rows, keyed by job id and replaced on a re-run, so a job's effects exist exactly once."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import Comparison, FinetuneResult, ProbeResult, Score, UnitMap


def _replace(session: Session, model: type, job_id: uuid.UUID, **values: Any) -> None:
    session.execute(sa.delete(model).where(model.job_id == job_id))
    session.add(model(job_id=job_id, **values))


def put_unit_map(session: Session, *, job_id: uuid.UUID, summary: dict[str, Any], artifact_uri: str) -> None:
    """The unit map of audit ``job_id``."""
    _replace(session, UnitMap, job_id, summary=summary, artifact_uri=artifact_uri)


def put_score(
    session: Session, *, job_id: uuid.UUID, protocol_hash: str, metrics: dict[str, Any], records_uri: str
) -> None:
    """The scores of evaluation ``job_id`` (one row per evaluation)."""
    _replace(session, Score, job_id, protocol_hash=protocol_hash, metrics=metrics, records_uri=records_uri)


def put_finetune_result(
    session: Session, *, job_id: uuid.UUID, loss_curve: dict[str, Any], output_model_uri: str
) -> None:
    """The loss curve and output model of fine-tune ``job_id``."""
    _replace(session, FinetuneResult, job_id, loss_curve=loss_curve, output_model_uri=output_model_uri)


def put_comparison(session: Session, *, job_id: uuid.UUID, crosstab: dict[str, Any]) -> None:
    """The role cross-tab of comparison ``job_id``."""
    _replace(session, Comparison, job_id, crosstab=crosstab)


def put_probe_result(session: Session, *, job_id: uuid.UUID, summary: dict[str, Any], artifact_uri: str) -> None:
    """The distance curves, refusal direction and unit writes of probe ``job_id``."""
    _replace(session, ProbeResult, job_id, summary=summary, artifact_uri=artifact_uri)
