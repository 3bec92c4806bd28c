"""Property-based fuzz over the OpenAPI description: whatever schemathesis sends, never a 5xx."""

from __future__ import annotations

import json

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from tests.service.conftest import REPO, Tenant_

# Operation labels come from the committed copy (the drift test keeps it equal to the app's).
LABELS = [
    result.ok().label
    for result in schemathesis.openapi.from_dict(
        json.loads((REPO / "docs" / "openapi.json").read_text())
    ).get_all_operations()
]
MAX_EXAMPLES = 8  # ~34 operations x 8 examples keeps the fuzz well under a minute on 2 cores


@pytest.mark.parametrize("label", LABELS)
def test_no_server_errors(label: str, app: FastAPI, alice: Tenant_, alice_model: str) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label

    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=alice.headers, checks=[not_a_server_error])

    fuzz()


# What the schema-driven run above never sends (it only makes zoned date-times and small bodies):
# hand-written strategies for the inputs that once answered 500 (issue 16).
JOB_LISTS = ["/v1/jobs", "/v1/audits", "/v1/evaluations", "/v1/finetunes", "/v1/comparisons"]
naive_moments = st.one_of(
    st.dates().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat(sep=" ", timespec="minutes")),
)
nasty_text = st.text(
    alphabet=st.sampled_from(["a", "\x00", "\n", "\u200b", "\u2028", "é", "/"]), min_size=1, max_size=300
)
FUZZ = settings(
    max_examples=12, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def test_naive_and_date_only_filters_never_fail(client, alice: Tenant_) -> None:
    @given(
        path=st.sampled_from(JOB_LISTS), name=st.sampled_from(["created_after", "created_before"]), moment=naive_moments
    )
    @FUZZ
    def fuzz(path: str, name: str, moment: str) -> None:
        r = client.get(path, params={name: moment}, headers=alice.headers)
        assert r.status_code == 200, (path, moment, r.text)

    fuzz()


def test_oversized_and_deeply_nested_bodies_are_refused_as_client_errors(make_app, alice: Tenant_) -> None:
    from fastapi.testclient import TestClient

    app = make_app(max_json_body_bytes=64 * 1024)

    @given(
        path=st.sampled_from(["/v1/models", "/v1/audits", "/v1/evaluations", "/v1/finetunes"]),
        extra=st.integers(min_value=1, max_value=200_000),
        depth=st.integers(min_value=1_000, max_value=60_000),
        nested=st.booleans(),
    )
    @FUZZ
    def fuzz(path: str, extra: int, depth: int, nested: bool) -> None:
        body = (b"[" * depth + b"]" * depth) if nested else b'{"pad": "' + b"a" * (64 * 1024 + extra) + b'"}'
        r = client.post(path, content=body, headers={**alice.headers, "content-type": "application/json"})
        expected = 413 if len(body) > 64 * 1024 else 422
        assert r.status_code == expected and r.headers["content-type"] == "application/problem+json", r.text

    with TestClient(app, raise_server_exceptions=False) as client:
        fuzz()


def test_nul_bytes_and_long_names_are_client_errors(client, alice: Tenant_) -> None:
    @given(name=nasty_text, filename=nasty_text, where=st.sampled_from(["model", "dataset name", "filename"]))
    @FUZZ
    def fuzz(name: str, filename: str, where: str) -> None:
        if where == "model":
            r = client.post("/v1/models", json={"name": name, "source": "builtin:smollm2"}, headers=alice.headers)
        else:
            raw_name = name.encode() if where == "dataset name" else b"ok"
            raw_file = (filename + ".txt").encode() if where == "filename" else b"d.txt"
            body = (
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="'
                + raw_file.replace(b'"', b"")
                + b'"\r\n\r\none line\r\n--b\r\nContent-Disposition: form-data; name="name"\r\n\r\n'
                + raw_name
                + b"\r\n--b--\r\n"
            )
            r = client.post(
                "/v1/datasets",
                content=body,
                headers={**alice.headers, "content-type": "multipart/form-data; boundary=b"},
            )
        assert r.status_code < 500, (where, name, filename, r.text)

    fuzz()
