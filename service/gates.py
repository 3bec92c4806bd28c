"""Gates: thresholds on a job's result, checked once when the job succeeds.

A gate maps dotted paths into the job's result to rules: ``{"safety.asr": {"max": 0.1},
"classes.SCU.param_fraction": {"max_change": 0.002, "against": "<audit id>"}}``. The API checks the
paths and the ``against`` job when the job is submitted (``path_error``); the worker computes the
verdict in the transaction that marks the job succeeded (``evaluate``), so every reader (GET, the
webhook) sees the same ``gate: {rules, passed, checks}``. A job that failed or was cancelled keeps
``passed: null``.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.models import FinetuneResult, Job, JobStatus, ProbeResult, Score, UnitMap

# What a path may start with, per job kind: the documents the results hold (docs/api.md, Gates).
SEGMENT = r"[A-Za-z0-9_\-]+"
PATHS: dict[str, re.Pattern[str]] = {
    "audit": re.compile(r"classes\.(SCU|UCU|CU|RU)\.(units|unit_fraction|param_fraction)"),
    "evaluation": re.compile(rf"(safety|utility)(\.{SEGMENT})+"),
    "finetune": re.compile(rf"(evaluation|refusal_track)(\.{SEGMENT})+"),
    "probe": re.compile(rf"(distances|direction|unit_writes)(\.{SEGMENT})+"),
}
EXAMPLES = {
    "audit": "classes.SCU.param_fraction",
    "evaluation": "safety.asr",
    "finetune": "evaluation.safety.asr",
    "probe": "direction.norm",
}


def path_error(kind: str, path: str) -> str | None:
    """Why ``path`` cannot exist in a result of ``kind``, or None when it may."""
    pattern = PATHS.get(kind)
    if pattern is None:
        return f"{kind} jobs take no gate"
    if pattern.fullmatch(path) is None:
        article = "an" if kind[0] in "aeiou" else "a"
        return (
            f"{path!r} is not a path in {article} {kind}'s result (must match {pattern.pattern}, e.g. {EXAMPLES[kind]})"
        )
    return None


def stored(rules: dict[str, Any]) -> dict[str, Any]:
    """The ``jobs.gate`` value of a new job: its rules, no verdict yet."""
    return {"rules": rules, "passed": None, "checks": []}


def result_document(session: Session, job: Job) -> dict[str, Any] | None:
    """The result a gate's paths point into: the unit-map summary, the scores' metrics, the fine-tune's curve."""
    if job.kind == "audit":
        return session.scalar(sa.select(UnitMap.summary).where(UnitMap.job_id == job.id))
    if job.kind == "evaluation":
        return session.scalar(sa.select(Score.metrics).where(Score.job_id == job.id).order_by(Score.created_at))
    if job.kind == "finetune":
        return session.scalar(sa.select(FinetuneResult.loss_curve).where(FinetuneResult.job_id == job.id))
    if job.kind == "probe":
        return session.scalar(sa.select(ProbeResult.summary).where(ProbeResult.job_id == job.id))
    return None


def lookup(document: Any, path: str) -> float | None:
    """The finite number at dotted ``path`` (list items by index), or None."""
    value = document
    for segment in path.split("."):
        if isinstance(value, dict):
            value = value.get(segment)
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _check(session: Session, job: Job, document: Any, path: str, rule: dict[str, Any]) -> dict[str, Any]:
    value = lookup(document, path)
    check: dict[str, Any] = {"path": path, "value": value, "rule": rule, "passed": False}
    if value is None:
        return check | {"reason": f"the result has no number at {path}"}
    failures = []
    if rule.get("min") is not None and value < rule["min"]:
        failures.append(f"{value:g} < min {rule['min']:g}")
    if rule.get("max") is not None and value > rule["max"]:
        failures.append(f"{value:g} > max {rule['max']:g}")
    if rule.get("max_change") is not None:
        against = session.scalars(
            sa.select(Job).where(Job.id == uuid.UUID(rule["against"]), Job.tenant_id == job.tenant_id)
        ).one_or_none()
        if against is None or against.status != JobStatus.succeeded.value:
            state = "gone" if against is None else against.status
            return check | {"reason": f"the job it is compared against ({rule['against']}) is {state}, not succeeded"}
        baseline = lookup(result_document(session, against), path)
        if baseline is None:
            return check | {"reason": f"the job it is compared against has no number at {path}"}
        change = value - baseline
        check |= {"against_value": baseline, "change": change}
        if abs(change) > rule["max_change"]:
            failures.append(f"changed by {change:+g} from {baseline:g}, more than max_change {rule['max_change']:g}")
    if failures:
        return check | {"reason": "; ".join(failures)}
    return check | {"passed": True, "reason": "within the rule"}


def evaluate(session: Session, job: Job) -> dict[str, Any] | None:
    """The gate of succeeded ``job`` with its verdict (its results already in ``session``), or None without one."""
    if not job.gate:
        return None
    document = result_document(session, job)
    checks = [_check(session, job, document, path, rule) for path, rule in sorted(job.gate["rules"].items())]
    return {"rules": job.gate["rules"], "passed": all(c["passed"] for c in checks), "checks": checks}
