"""The key is checked before a body is read, and no route reads more body than its limit (413 problem+json)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from fastapi import FastAPI

from tests.service.conftest import Tenant_

CHUNK = 64 * 1024


def call(
    app: FastAPI, method: str, path: str, headers: dict[str, str], body: bytes, *, declare_length: bool = True
) -> tuple[int, dict, int]:
    """Send ``body`` in 64 KiB chunks straight to the ASGI app; (status, JSON answer, body bytes the app pulled)."""
    chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)] or [b""]
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        if not chunks:
            await asyncio.sleep(3600)  # the client has nothing more to send; never reached when the app stops early
        chunk = chunks.pop(0)
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if declare_length:
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": raw,
        "scheme": "http",
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    content_type = dict(start["headers"]).get(b"content-type", b"").decode()
    return start["status"], {"content_type": content_type, **json.loads(answer or b"{}")}, pulled


def _json_body(size: int) -> bytes:
    return json.dumps({"model_id": "x", "pad": "a" * size}).encode()


def test_a_big_json_post_without_a_key_is_refused_before_its_body_is_read(app: FastAPI) -> None:
    status, answer, pulled = call(
        app, "POST", "/v1/audits", {"content-type": "application/json"}, _json_body(8 * 2**20)
    )
    assert (status, answer["content_type"], pulled) == (401, "application/problem+json", 0)


def test_an_upload_without_a_key_is_refused_before_anything_is_read_or_stored(app: FastAPI) -> None:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"\r\n\r\n'
        + b'{"prompt": "p"}\n' * 200_000
        + b"\r\n--b--\r\n"
    )
    status, _, pulled = call(app, "POST", "/v1/datasets", {"content-type": "multipart/form-data; boundary=b"}, body)
    assert (status, pulled) == (401, 0)
    assert not (Path(app.state.settings.artifact_dir)).exists()


def test_a_declared_length_over_the_routes_limit_is_413_unread(app: FastAPI, alice: Tenant_) -> None:
    status, answer, pulled = call(
        app, "POST", "/v1/audits", {"content-type": "application/json", **alice.headers}, _json_body(2 * 2**20)
    )
    assert (status, answer["content_type"], pulled) == (413, "application/problem+json", 0)
    assert (answer["limit"], answer["limit_value"]) == ("max_json_body_bytes", 2**20)


def test_a_streamed_body_without_length_is_cut_at_the_limit(make_app, alice: Tenant_) -> None:
    app = make_app(max_json_body_bytes=256 * 1024)
    status, answer, pulled = call(
        app,
        "POST",
        "/v1/models",
        {"content-type": "application/json", **alice.headers},
        _json_body(4 * 2**20),
        declare_length=False,
    )
    assert (status, answer["content_type"], answer["limit"]) == (413, "application/problem+json", "max_json_body_bytes")
    assert pulled <= 256 * 1024 + CHUNK  # it stopped reading at the limit


def test_uploads_have_their_own_limit_and_a_streamed_one_over_it_stores_nothing(make_app, alice: Tenant_) -> None:
    app = make_app(max_upload_bytes=200_000, max_json_body_bytes=1000)
    small = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jsonl"\r\n\r\n'
        + b'{"prompt": "p"}\n' * 1000
        + b"\r\n--b--\r\n"
    )  # 16 kB: over the JSON limit, under the upload one
    headers = {"content-type": "multipart/form-data; boundary=b", **alice.headers}
    status, answer, _ = call(app, "POST", "/v1/datasets", headers, small)
    assert status == 201, answer
    big = small.replace(b'{"prompt": "p"}\n' * 1000, b'{"prompt": "p"}\n' * 100_000)
    status, answer, pulled = call(app, "POST", "/v1/datasets", headers, big, declare_length=False)
    assert (status, answer["limit"]) == (413, "max_upload_bytes")
    assert pulled < len(big) / 2
    stored = list((Path(app.state.settings.artifact_dir) / str(alice.id) / "datasets").iterdir())
    assert len(stored) == 1  # only the small upload


def test_get_requests_and_small_bodies_are_unaffected(client, alice: Tenant_) -> None:
    r = client.post("/v1/models", json={"name": "m", "source": "builtin:smollm2"}, headers=alice.headers)
    assert r.status_code == 201, r.text
    assert client.get("/v1/models", headers=alice.headers).status_code == 200
    r = client.post("/v1/models", json={"name": "m2", "source": "builtin:smollm2"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
