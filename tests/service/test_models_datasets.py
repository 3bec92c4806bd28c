"""Registered models and dataset uploads."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.service.conftest import Tenant_


def test_register_list_and_get_models(client: TestClient, alice: Tenant_, bob: Tenant_):
    created = client.post(
        "/v1/models", json={"name": "llama", "source": "meta-llama/Llama-3.2-1B-Instruct"}, headers=alice.headers
    )
    assert created.status_code == 201
    model = created.json()
    assert created.headers["location"] == f"/v1/models/{model['id']}"
    assert client.get(f"/v1/models/{model['id']}", headers=alice.headers).json()["source"] == model["source"]
    assert client.get("/v1/models", headers=alice.headers).json()["total"] == 1
    assert client.get(f"/v1/models/{model['id']}", headers=bob.headers).status_code == 404
    assert client.get("/v1/models", headers=bob.headers).json() == {
        "items": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
        "next": None,
    }


def test_model_name_conflict_and_bad_source(client: TestClient, alice: Tenant_, bob: Tenant_):
    body = {"name": "smol", "source": "builtin:smollm2"}
    assert client.post("/v1/models", json=body, headers=alice.headers).status_code == 201
    r = client.post("/v1/models", json=body, headers=alice.headers)
    assert r.status_code == 409 and "smol" in r.json()["detail"]
    assert client.post("/v1/models", json=body, headers=bob.headers).status_code == 201  # names are per tenant
    r = client.post("/v1/models", json={"name": "x", "source": "has spaces"}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "body.source"
    r = client.post("/v1/models", json={"name": "x", "source": "a", "extra": 1}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "body.extra"


@pytest.mark.parametrize(
    ("filename", "content", "fmt", "rows"),
    [
        ("harmful.jsonl", b'{"prompt": "a"}\n\n{"prompt": "b"}\n', "jsonl", 2),
        ("utility.csv", b"prompt,response\nhi,there\nfoo,bar\nx,y\n", "csv", 3),
        ("list.json", b'[{"prompt": "a"}]', "json", 1),
        ("notes.txt", b"one\ntwo\n", "txt", 2),
    ],
)
def test_upload_dataset_counts_rows_and_hashes(
    app: FastAPI, client: TestClient, alice: Tenant_, filename: str, content: bytes, fmt: str, rows: int
):
    r = client.post("/v1/datasets", files={"file": (filename, content)}, headers=alice.headers)
    assert r.status_code == 201, r.text
    dataset = r.json()
    sha = hashlib.sha256(content).hexdigest()
    assert (dataset["format"], dataset["rows"], dataset["sha256"], dataset["size_bytes"]) == (
        fmt,
        rows,
        sha,
        len(content),
    )
    assert dataset["name"] == filename
    stored: Path = app.state.settings.artifact_dir / str(alice.id) / "datasets" / sha
    assert stored.read_bytes() == content


def test_dataset_format_and_content_errors(client: TestClient, alice: Tenant_):
    r = client.post("/v1/datasets", files={"file": ("data.bin", b"x")}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "body.format"
    r = client.post("/v1/datasets", files={"file": ("d.jsonl", b'{"prompt": "a"}\nnot json\n')}, headers=alice.headers)
    assert r.status_code == 422 and "line 2" in r.json()["detail"]
    r = client.post("/v1/datasets", files={"file": ("d.txt", b"")}, headers=alice.headers)
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = client.post("/v1/datasets", data={"format": "yaml"}, files={"file": ("d.txt", b"a")}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == "body.format"
    r = client.post(
        "/v1/datasets",
        data={"format": "txt", "name": "renamed"},
        files={"file": ("d.weird", b"a")},
        headers=alice.headers,
    )
    assert r.status_code == 201 and r.json()["name"] == "renamed"


def test_upload_over_the_limit_is_413_naming_it(make_app: Callable[..., FastAPI], alice: Tenant_):
    with TestClient(make_app(max_upload_bytes=1000, max_dataset_rows=3)) as client:
        r = client.post("/v1/datasets", files={"file": ("big.txt", b"x" * 1001)}, headers=alice.headers)
        assert r.status_code == 413
        assert r.headers["content-type"] == "application/problem+json"
        assert "1000 bytes" in r.json()["detail"] and r.json()["limit_bytes"] == 1000
        r = client.post("/v1/datasets", files={"file": ("rows.txt", b"a\nb\nc\nd\n")}, headers=alice.headers)
        assert r.status_code == 413 and r.json()["limit_rows"] == 3
        assert (
            client.post("/v1/datasets", files={"file": ("ok.txt", b"x" * 1000)}, headers=alice.headers).status_code
            == 201
        )


def test_datasets_are_tenant_private(client: TestClient, alice: Tenant_, bob: Tenant_):
    dataset = client.post("/v1/datasets", files={"file": ("a.txt", b"a\n")}, headers=alice.headers).json()
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=alice.headers).json()["rows"] == 1
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=bob.headers).status_code == 404
    assert client.get(f"/v1/datasets/{uuid.uuid4()}", headers=alice.headers).status_code == 404
    assert client.get("/v1/datasets", headers=bob.headers).json()["total"] == 0
    assert [d["id"] for d in client.get("/v1/datasets", headers=alice.headers).json()["items"]] == [dataset["id"]]
