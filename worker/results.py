"""Result rows, keyed by job id and replaced on a re-run, so a job's effects exist exactly once."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import Comparison, EvaluationRecord, FinetuneResult, ProbeResult, Score, UnitMap


def _replace(session: Session, model: type, job_id: uuid.UUID, **values: Any) -> None:
    session.execute(sa.delete(model).where(model.job_id == job_id))
    session.add(model(job_id=job_id, **values))


def put_unit_map(session: Session, *, job_id: uuid.UUID, summary: dict[str, Any], artifact_uri: str) -> None:
    """The unit map of audit ``job_id``."""
    _replace(session, UnitMap, job_id, summary=summary, artifact_uri=artifact_uri)


def put_score(
    session: Session,
    *,
    job_id: uuid.UUID,
    protocol_hash: str,
    metrics: dict[str, Any],
    records_uri: str,
    records: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    """The scores of evaluation ``job_id`` (one row per evaluation) and its records (one row per prompt x
    condition), ``records`` being the engine result's ``{"harmful": [...], "harmless": [...]}``."""
    _replace(session, Score, job_id, protocol_hash=protocol_hash, metrics=metrics, records_uri=records_uri)
    session.execute(sa.delete(EvaluationRecord).where(EvaluationRecord.job_id == job_id))
    headline = metrics.get("safety", {}).get("refusal_list")
    rows = [
        record_row(job_id, position, record, headline)
        for position, record in enumerate([*(records or {}).get("harmful", []), *(records or {}).get("harmless", [])])
    ]
    if rows:
        session.execute(sa.insert(EvaluationRecord), rows)


def record_row(job_id: uuid.UUID, position: int, record: dict[str, Any], headline: str | None) -> dict[str, Any]:
    """The columns of one evaluation record: the record itself and what the records API filters on."""
    verdicts = record.get("verdicts") or {}
    judge = record.get("judge")
    judge_verdict = None
    if isinstance(judge, dict):
        unsafe = judge.get("unsafe")  # None: the judge's answer did not parse
        judge_verdict = "unparsed" if unsafe is None else "unsafe" if unsafe else "safe"
    category = record.get("category")
    return {
        "id": uuid.uuid4(),
        "job_id": job_id,
        "position": position,
        "prompt_set": record["set"],
        "condition": record["condition"],
        "category": None if category is None else str(category),
        # the headline list is the protocol's first; its verdict is also the first the engine wrote
        "verdict": verdicts.get(headline) if headline else next(iter(verdicts.values()), None),
        "judge_verdict": judge_verdict,
        "record": record,
    }


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
