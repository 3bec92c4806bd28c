"""GET /v1/audits/{id}/unit-map/arrays and .../layers/{layer}/neurons: the figures' arrays, tenant-scoped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from ssah_engine.classes import CLASSES, LABEL
from tests.engine.test_unitmap_arrays import SPACE, synthetic_map
from tests.service.conftest import Tenant_, succeeded_audit


@pytest.fixture
def stored(client: TestClient, db: Session, alice: Tenant_, alice_model: str):
    """A succeeded audit whose artifact is the zip the worker publishes."""
    unit_map = synthetic_map(3)
    artifact_dir: Path = client.app.state.settings.artifact_dir  # type: ignore[attr-defined]
    folder = artifact_dir / str(alice.id) / "jobs" / "a"
    directory = unit_map.save(folder / "unit_map")
    archive = shutil.make_archive(str(folder / "unit_map"), "zip", directory)
    uri = str(Path(archive).relative_to(artifact_dir))
    return succeeded_audit(client, db, alice, alice_model, artifact_uri=uri), unit_map


def test_arrays_carry_the_units_of_every_class_binned_and_per_layer(client: TestClient, alice: Tenant_, stored):
    audit, unit_map = stored
    r = client.get(f"/v1/audits/{audit}/unit-map/arrays", params={"bins": 32}, headers=alice.headers)
    assert r.status_code == 200, r.text
    body, summary = r.json(), unit_map.summary()
    assert body["job_id"] == audit and body["layers"] == SPACE.num_layers and body["density"]["bins"] == 32
    assert body["heads_per_layer"] == SPACE.num_heads and body["neurons_per_layer"] == SPACE.intermediate_size
    for name in CLASSES:
        binned = sum(body["density"]["counts"][name][2::3]) + body["density"]["missing"][name]
        assert binned == summary["classes"][name]["neurons"]
        assert body["layer_counts"]["heads"][name] == [layer["heads"][name] for layer in summary["layers"]]
        assert body["heads"]["labels"].count(LABEL[name]) == summary["classes"][name]["heads"]
    cells = [v[i] for v in body["density"]["counts"].values() for i in range(len(v)) if i % 3 != 2]
    assert max(cells) == 31 and min(cells) == 0  # the grid spans the units from the lowest to the highest
    assert body["cuts"]["scu"] == pytest.approx(
        min(
            (unit_map.z_safety - unit_map.z_utility)[unit_map.labels == LABEL["SCU"]].tolist()  # type: ignore[operator]
        )
    )
    # Compact: the payload grows with the grid and the heads, not with the neurons.
    assert len(r.content) < 60 * SPACE.total_heads + 40 * 32 * 32 * 4


def test_a_layers_neurons_for_the_zoom(client: TestClient, alice: Tenant_, stored):
    audit, unit_map = stored
    r = client.get(f"/v1/audits/{audit}/unit-map/layers/2/neurons", headers=alice.headers)
    assert r.status_code == 200, r.text
    expected = unit_map.labels[SPACE.total_heads :].reshape(SPACE.num_layers, -1)[2].tolist()
    assert r.json()["labels"] == expected and len(r.json()["z_utility"]) == SPACE.intermediate_size
    r = client.get(f"/v1/audits/{audit}/unit-map/layers/{SPACE.num_layers}/neurons", headers=alice.headers)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_arrays_are_tenant_scoped_409_before_success_and_404_without_the_file(
    client: TestClient, db: Session, alice: Tenant_, bob: Tenant_, alice_model: str, stored
):
    audit, _ = stored
    for path in ("arrays", "layers/0/neurons"):
        assert client.get(f"/v1/audits/{audit}/unit-map/{path}", headers=bob.headers).status_code == 404
        queued = client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).json()["id"]
        r = client.get(f"/v1/audits/{queued}/unit-map/{path}", headers=alice.headers)
        assert r.status_code == 409 and r.json()["type"] == "urn:ssah:problem:job-not-succeeded"
        gone = succeeded_audit(client, db, alice, alice_model, artifact_uri=f"{alice.id}/gone.zip")
        assert client.get(f"/v1/audits/{gone}/unit-map/{path}", headers=alice.headers).status_code == 404
    artifact_dir: Path = client.app.state.settings.artifact_dir  # type: ignore[attr-defined]
    (artifact_dir / str(alice.id) / "junk.zip").write_bytes(b"not a unit map")
    junk = succeeded_audit(client, db, alice, alice_model, artifact_uri=f"{alice.id}/junk.zip")
    r = client.get(f"/v1/audits/{junk}/unit-map/arrays", headers=alice.headers)
    assert r.status_code == 404 and "cannot be read" in r.json()["detail"]
    assert client.get(f"/v1/audits/{audit}/unit-map/arrays?bins=2", headers=alice.headers).status_code == 422
