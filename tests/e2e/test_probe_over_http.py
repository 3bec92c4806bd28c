"""A probe over HTTP with a real Celery worker, Redis and PostgreSQL: queued, run, result and files served."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests.e2e.conftest import poll

pytestmark = pytest.mark.slow


def test_probe_with_an_audit_runs_to_success(client, headers, model_id, worker):
    worker.start()
    r = client.post("/v1/audits", json={"model_id": model_id, "samples": 8}, headers=headers)
    audit = poll(client, r.headers["Location"], headers, worker=worker)
    assert audit["status"] == "succeeded", audit
    r = client.post(
        "/v1/probes",
        json={"model_id": model_id, "audit_id": audit["id"], "ks": [2, 4], "queries": 4, "calibration": 8},
        headers=headers,
    )
    assert r.status_code == 202, r.text
    probe = poll(client, r.headers["Location"], headers, worker=worker)
    assert (probe["status"], probe["progress"], probe["error"]) == ("succeeded", 1.0, None), probe
    summary = client.get(f"/v1/probes/{probe['id']}/result", headers=headers).json()["summary"]
    assert summary["queries"] == 4 and set(summary["distances"]["compliance"]) == {"2", "4"}
    assert 0 <= summary["direction"]["layer"] < summary["model"]["layers"]
    assert sum(c["units"] for c in summary["unit_writes"]["classes"].values()) == summary["unit_writes"]["all"]["units"]
    r = client.get(f"/v1/probes/{probe['id']}/direction", headers=headers)
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        assert json.loads(archive.read("direction.json"))["layer"] == summary["direction"]["layer"]
