"""Inputs that once answered 500: naive and date-only datetimes, deep nesting, long filenames, NUL bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.admin import create_api_key
from service.db import get_sessionmaker, session_scope
from service.main import create_app
from service.settings import Settings
from tests.service.conftest import Tenant_, alembic_config

JOB_LISTS = ["/v1/jobs", "/v1/audits", "/v1/evaluations", "/v1/finetunes", "/v1/comparisons"]
NAIVE = ["2025-01-01T00:00:00", "2025-01-01", "2025-01-01T00:00", "2025-01-01 00:00:00"]


@pytest.fixture(scope="module")
def sqlite_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The embedded layout: a SQLite file built by the migrations."""
    base = tmp_path_factory.mktemp("embedded")
    url = f"sqlite:///{base / 'ssah.db'}"
    command.upgrade(alembic_config(url), "head")
    for session in session_scope(get_sessionmaker(url)):
        key = create_api_key(session, "sqlite-tenant")
    app = create_app(
        Settings(database_url=url, broker_url="memory://", artifact_dir=base / "artifacts", rate_limit_per_minute=0)
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("path", JOB_LISTS)
@pytest.mark.parametrize("moment", NAIVE)
def test_naive_and_date_only_datetimes_are_utc_on_postgresql(
    client: TestClient, alice: Tenant_, alice_model: str, path: str, moment: str
) -> None:
    assert client.post("/v1/audits", json={"model_id": alice_model}, headers=alice.headers).status_code == 202
    for name in ("created_after", "created_before"):
        r = client.get(path, params={name: moment}, headers=alice.headers)
        assert r.status_code == 200, r.text
    after = client.get("/v1/jobs", params={"created_after": moment}, headers=alice.headers).json()
    assert after["total"] == 1  # 2025-01-01 (UTC) is before the job just made
    assert client.get("/v1/jobs", params={"created_before": moment}, headers=alice.headers).json()["total"] == 0


@pytest.mark.parametrize("path", JOB_LISTS)
def test_naive_and_date_only_datetimes_are_utc_on_sqlite(sqlite_client, path: str) -> None:
    client, headers = sqlite_client
    for moment in NAIVE:
        r = client.get(path, params={"created_after": moment}, headers=headers)
        assert r.status_code == 200, r.text


def _upload(client: TestClient, tenant: Tenant_, content: bytes, *, filename: str = "d.jsonl", name: str | None = None):
    data = {"name": name} if name is not None else {}
    return client.post("/v1/datasets", files={"file": (filename, content)}, data=data, headers=tenant.headers)


def _stored(app: FastAPI, tenant: Tenant_) -> list[Path]:
    folder = Path(app.state.settings.artifact_dir) / str(tenant.id) / "datasets"
    return sorted(folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize(
    ("filename", "content", "line"),
    [
        ("deep.jsonl", b'{"prompt": "ok"}\n' + b"[" * 100_000 + b"]" * 100_000 + b"\n", "line 2"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "line 1"),
        ("deep2.json", b'[{"prompt": "a"},\n {"prompt": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}]", "line 2"),
    ],
)
def test_deeply_nested_datasets_are_422_naming_the_line(
    client: TestClient, app: FastAPI, alice: Tenant_, filename: str, content: bytes, line: str
) -> None:
    r = _upload(client, alice, content, filename=filename)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"body.file: {line}: ") and "nested" in r.json()["detail"]
    assert _stored(app, alice) == []


def test_a_filename_over_200_characters_is_422_and_nothing_is_stored(
    client: TestClient, app: FastAPI, alice: Tenant_
) -> None:
    r = _upload(client, alice, b'{"prompt": "p"}\n', filename="x" * 250 + ".jsonl")
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"] == "body.file"
    assert _stored(app, alice) == []
    assert client.get("/v1/datasets", headers=alice.headers).json()["total"] == 0
    # With a name of its own, the long filename is not the name: accepted.
    assert _upload(client, alice, b'{"prompt": "p"}\n', filename="x" * 250 + ".jsonl", name="short").status_code == 201


@pytest.mark.parametrize(
    ("filename", "name"), [(b"d.jsonl", b"bad\x00name"), (b"d\x00.jsonl", None), (b"d.jsonl", b"tab\tname")]
)
def test_nul_bytes_and_control_characters_in_names_are_422(
    client: TestClient, app: FastAPI, alice: Tenant_, filename: bytes, name: bytes | None
) -> None:
    # Raw multipart: HTTP clients escape a NUL in a filename, an attacker's script does not.
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n\r\n'
    body += b'{"prompt": "p"}\n\r\n'
    if name is not None:
        body += b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\n' + name + b"\r\n"
    body += b"--b--\r\n"
    r = client.post(
        "/v1/datasets", content=body, headers={"content-type": "multipart/form-data; boundary=b", **alice.headers}
    )
    assert r.status_code == 422, r.text
    assert _stored(app, alice) == []


@pytest.mark.parametrize("path", ["/dashboard/%00.html", "/dashboard/a%00b.js", "/dashboard/%00"])
def test_a_nul_byte_in_a_dashboard_path_is_404(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404, r.text


@pytest.mark.parametrize(
    "body", [b"[" * 100_000 + b"]" * 100_000, b'{"model_id": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"]
)
def test_a_deeply_nested_json_body_is_422(client: TestClient, alice: Tenant_, body: bytes) -> None:
    r = client.post("/v1/audits", content=body, headers={**alice.headers, "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["type"] == "json_too_deep", r.text
