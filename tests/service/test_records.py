"""GET /v1/evaluations/{id}/records: the records the worker stored, filtered, paginated, tenant-scoped;
and migration 0005 (evaluation_records) up, down and up again."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service.models import EvaluationRecord
from tests.service.conftest import Tenant_, alembic_config, recreate_database, set_job
from worker import results

HEADLINE = "ssah-31"


def record(set_name: str, index: int, condition: str, verdict: str | None, *, category=None, judge=None) -> dict:
    """A record as the engine writes it (``ssah_engine/evaluation/safety.py``)."""
    out = {
        "set": set_name,
        "index": index,
        "condition": condition,
        "prompt": f"{set_name} prompt {index}",
        "id": f"{set_name}-{index}",
        "category": category,
        "rendered_prompt": f"<user>{set_name} prompt {index}</user>",
        "response": None if verdict is None else f"answer {index} ({condition})",
        "margin": round(0.25 * index - 1, 6),
    }
    if verdict is not None:
        # the headline list first, as the engine writes them; the second list disagrees on purpose
        out["verdicts"] = {HEADLINE: verdict, "advbench-29": "refusal" if verdict == "success" else "success"}
        out["opens_with_refusal"] = verdict == "refusal"
    if judge is not None:
        out["judge"] = judge
    return out


UNSAFE = {"unsafe": True, "label": "unsafe", "score": 0.9, "parse_error": None}
SAFE = {"unsafe": False, "label": "safe", "score": 0.1, "parse_error": None}
UNPARSED = {"unsafe": None, "label": None, "score": None, "parse_error": "no verdict"}

# 6 harmful prompts x 2 conditions (judged) + 3 harmless prompts x 1 condition
HARMFUL = [
    record(
        "harmful",
        i,
        condition,
        ["success", "refusal", "short"][(i + (condition == "system")) % 3],
        category="cyber" if i % 2 else "chem",
        judge=[UNSAFE, SAFE, UNPARSED][(i // 2) % 3],
    )
    for condition in ("system", "no_system")
    for i in range(6)
]
HARMLESS = [record("harmless", i, "no_system", "refusal" if i == 1 else "success") for i in range(3)]
ALL = HARMFUL + HARMLESS


def finished_evaluation(client: TestClient, db: Session, tenant: Tenant_, model_id: str, **put) -> str:
    """An evaluation through the API, finished as the worker finishes one (``worker.results.put_score``)."""
    job = client.post("/v1/evaluations", json={"model_id": model_id}, headers=tenant.headers).json()["id"]
    set_job(db, job, status="succeeded")
    metrics = {"safety": {"refusal_list": HEADLINE, "asr": 0.5}}
    values = {
        "records_uri": f"{tenant.id}/jobs/{job}/evaluation.json",
        "records": {"harmful": HARMFUL, "harmless": HARMLESS},
    }
    results.put_score(db, job_id=uuid.UUID(job), protocol_hash="a" * 64, metrics=metrics, **(values | put))
    db.commit()
    return job


def get_records(client: TestClient, tenant: Tenant_, job: str, **params) -> dict:
    r = client.get(f"/v1/evaluations/{job}/records", params=params, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_records_come_back_as_the_engine_wrote_them_in_order(client, db, alice, alice_model):
    job = finished_evaluation(client, db, alice, alice_model)
    page = get_records(client, alice, job, limit=200)
    assert page["total"] == len(ALL) == 15 and page["next"] is None
    assert page["items"] == ALL  # the same keys and values: no key added (suffix_index, judge on harmless)
    assert "judge" not in page["items"][-1] and "suffix_index" not in page["items"][0]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"set": "harmful"}, lambda r: r["set"] == "harmful"),
        ({"set": "harmless"}, lambda r: r["set"] == "harmless"),
        ({"condition": "system"}, lambda r: r["condition"] == "system"),
        ({"category": "cyber"}, lambda r: r["category"] == "cyber"),
        ({"verdict": "success"}, lambda r: r["verdicts"][HEADLINE] == "success"),
        ({"verdict": "refusal", "set": "harmless"}, lambda r: r["set"] == "harmless" and r["index"] == 1),
        ({"judge": "unsafe"}, lambda r: r.get("judge") is UNSAFE),
        (
            {"judge": "safe", "condition": "no_system"},
            lambda r: r.get("judge") is SAFE and r["condition"] == "no_system",
        ),
        ({"judge": "unparsed"}, lambda r: r.get("judge") is UNPARSED),
        # keyword success the judge called safe: where the two disagree
        (
            {"verdict": "success", "judge": "safe"},
            lambda r: r["verdicts"][HEADLINE] == "success" and r.get("judge") is SAFE,
        ),
        ({"category": "nonexistent"}, lambda r: False),
    ],
)
def test_each_filter_selects_exactly_the_matching_records(client, db, alice, alice_model, params, expected):
    job = finished_evaluation(client, db, alice, alice_model)
    want = [r for r in ALL if expected(r)]
    page = get_records(client, alice, job, limit=200, **params)
    assert page["items"] == want and page["total"] == len(want)
    if params != {"category": "nonexistent"}:
        assert 0 < len(want) < len(ALL)  # the filter is a real selection, not all or nothing


def test_headline_verdict_is_the_first_list_the_protocol_names():
    rows = (
        results.record_row(uuid.uuid4(), 0, HARMFUL[0], HEADLINE),
        results.record_row(uuid.uuid4(), 0, HARMFUL[0], "advbench-29"),
    )
    assert (rows[0]["verdict"], rows[1]["verdict"]) == ("refusal", "success")  # HARMFUL[0] is system, i=0 -> refusal


def test_pages_follow_offset_and_limit_and_next_keeps_the_filters(client, db, alice, alice_model):
    job = finished_evaluation(client, db, alice, alice_model)
    harmful, seen, params = [r for r in ALL if r["set"] == "harmful"], [], {"set": "harmful", "limit": 5}
    while True:
        page = get_records(client, alice, job, **params)
        assert page["total"] == len(harmful) == 12 and page["limit"] == 5
        assert page["offset"] == len(seen)
        seen += page["items"]
        if page["next"] is None:
            break
        query = parse_qs(urlsplit(page["next"]).query)
        assert query["set"] == ["harmful"] and query["limit"] == ["5"]  # the filters travel with the link
        params = {key: value[0] for key, value in query.items()}
    assert seen == harmful  # three pages (5, 5, 2), no record twice, none missed
    assert get_records(client, alice, job, offset=100)["items"] == []
    r = client.get(f"/v1/evaluations/{job}/records", params={"limit": 201}, headers=alice.headers)
    assert r.status_code == 422  # the same bounds as every list


def test_another_tenants_evaluation_is_404_and_an_unfinished_one_409(client, db, alice, bob, alice_model):
    job = finished_evaluation(client, db, alice, alice_model)
    r = client.get(f"/v1/evaluations/{job}/records", headers=bob.headers)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert client.get(f"/v1/evaluations/{uuid.uuid4()}/records", headers=alice.headers).status_code == 404
    queued = client.post("/v1/evaluations", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
    r = client.get(f"/v1/evaluations/{queued}/records", headers=alice.headers)
    assert r.status_code == 409 and r.json()["job_status"] == "queued"
    set_job(db, queued, status="running")
    assert client.get(f"/v1/evaluations/{queued}/records", headers=alice.headers).json()["job_status"] == "running"
    # bob's own evaluation with the same records does not mix with alice's
    bob_model = client.post("/v1/models", json={"name": "m", "source": "builtin:smollm2"}, headers=bob.headers)
    bobs = finished_evaluation(client, db, bob, bob_model.json()["id"], records={"harmful": HARMFUL[:1]})
    assert get_records(client, bob, bobs)["total"] == 1 and get_records(client, alice, job)["total"] == len(ALL)


def test_a_rerun_replaces_the_records_and_bad_filter_values_are_422(client, db, alice, alice_model):
    job = finished_evaluation(client, db, alice, alice_model)
    results.put_score(
        db,
        job_id=uuid.UUID(job),
        protocol_hash="b" * 64,
        metrics={"safety": {"refusal_list": HEADLINE}},
        records_uri="x",
        records={"harmful": HARMFUL[:2], "harmless": []},
    )
    db.commit()
    assert get_records(client, alice, job)["items"] == HARMFUL[:2]
    assert db.scalar(sa.select(sa.func.count()).select_from(EvaluationRecord)) == 2
    for params in ({"set": "both"}, {"verdict": "unsafe"}, {"condition": "sys"}, {"judge": "maybe"}):
        r = client.get(f"/v1/evaluations/{job}/records", params=params, headers=alice.headers)
        assert r.status_code == 422, params


def test_a_deleted_job_takes_its_records_along(client, db, alice, alice_model):
    job = finished_evaluation(client, db, alice, alice_model)
    db.execute(sa.text("DELETE FROM jobs WHERE id = :id"), {"id": uuid.UUID(job)})
    db.commit()
    assert db.scalar(sa.select(sa.func.count()).select_from(EvaluationRecord)) == 0


def test_0005_up_down_up(database_url: str) -> None:
    scratch = make_url(database_url).set(database=make_url(database_url).database + "_m0005")
    url = scratch.render_as_string(hide_password=False)
    recreate_database(url)
    config = alembic_config(url)
    engine = sa.create_engine(url)
    now = datetime.now(timezone.utc)
    try:
        command.upgrade(config, "0004")
        assert "evaluation_records" not in sa.inspect(engine).get_table_names()
        command.upgrade(config, "0005")
        tenant, job = uuid.uuid4(), uuid.uuid4()
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:id, 'a', now())"), {"id": tenant})
            conn.execute(
                sa.text(
                    "INSERT INTO jobs (id, tenant_id, kind, status, progress, params, created_at, updated_at,"
                    " attempts, cancel_requested, version)"
                    " VALUES (:id, :t, 'evaluation', 'succeeded', 1, '{}', :now, :now, 1, false, 1)"
                ),
                {"id": job, "t": tenant, "now": now},
            )
            insert = sa.text(
                "INSERT INTO evaluation_records (id, job_id, position, prompt_set, condition, record)"
                " VALUES (:id, :j, :p, :s, 'system', '{}')"
            )
            conn.execute(insert, {"id": uuid.uuid4(), "j": job, "p": 0, "s": "harmful"})
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # one row per position
            conn.execute(insert, {"id": uuid.uuid4(), "j": job, "p": 0, "s": "harmful"})
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # the set check
            conn.execute(insert, {"id": uuid.uuid4(), "j": job, "p": 1, "s": "neutral"})
        command.downgrade(config, "0004")
        assert "evaluation_records" not in sa.inspect(engine).get_table_names()
        with engine.connect() as conn:  # the job itself stays
            assert conn.execute(sa.text("SELECT kind FROM jobs")).scalar_one() == "evaluation"
        command.upgrade(config, "head")
        columns = {c["name"] for c in sa.inspect(engine).get_columns("evaluation_records")}
        assert {c.name for c in EvaluationRecord.__table__.columns} == columns  # the model and the migration agree
    finally:
        engine.dispose()
        admin = sa.create_engine(scratch.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{scratch.database}" WITH (FORCE)'))
        admin.dispose()
