"""The OpenAPI description a client generator reads: verb-first ids, problem+json errors, typed files, examples."""

from __future__ import annotations

import re

import pytest

from service.main import create_app
from service.schemas import examples
from service.schemas.integrations import RetentionUpdate, SeriesCreate
from service.schemas.jobs import AuditCreate, ComparisonCreate, EvaluationCreate, FinetuneCreate, ProbeCreate
from service.schemas.resources import ModelCreate
from service.settings import Settings

VERB_FIRST = re.compile(r"^(create|get|list|cancel|download|rotate|delete|update)_[a-z0-9_]+$")


@pytest.fixture(scope="module")
def schema() -> dict:
    return create_app(Settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")).openapi()


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_operation_ids_are_verb_first_and_unique(schema: dict):
    ids = [operation["operationId"] for _, _, operation in operations(schema)]
    assert len(ids) == len(set(ids))
    assert [i for i in ids if not VERB_FIRST.match(i)] == []
    assert {"create_audit", "get_audit", "list_audits", "cancel_audit", "download_finetuned_model"} <= set(ids)


def test_errors_are_problem_json_and_declared_where_they_occur(schema: dict):
    for path, method, operation in operations(schema):
        responses = operation["responses"]
        for status, response in responses.items():
            if status[0] in "45":
                assert list(response["content"]) == ["application/problem+json"], (path, method, status)
                assert response["content"]["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"
                }
        if path.startswith("/v1/"):
            assert {"401", "422", "429", "503"} <= set(responses), (path, method)
            assert "Retry-After" in responses["429"]["headers"] and "Retry-After" in responses["503"]["headers"]
            if "{" in path:
                assert "404" in responses, (path, method)
            if method == "post":
                assert "413" in responses, (path, method)  # the body guard's limit
            if any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", [])):
                assert "409" in responses, (path, method)  # a request with the same key still in progress
    assert "HTTPValidationError" not in schema["components"]["schemas"]  # FastAPI's JSON 422 is not what we send


def test_file_downloads_are_typed_binary(schema: dict):
    media = {
        "download_finetuned_model": "application/x-tar",
        "download_probe_direction": "application/zip",
        "download_unit_map_artifact": "application/octet-stream",
    }
    by_id = {operation["operationId"]: operation for _, _, operation in operations(schema)}
    for operation_id, media_type in media.items():
        content = by_id[operation_id]["responses"]["200"]["content"]
        assert content == {media_type: {"schema": {"type": "string", "format": "binary"}}}


BODIES = {
    "create_model": (ModelCreate, examples.MODEL),
    "create_audit": (AuditCreate, examples.AUDIT),
    "create_evaluation": (EvaluationCreate, examples.EVALUATION),
    "create_finetune": (FinetuneCreate, examples.FINETUNE),
    "create_probe": (ProbeCreate, examples.PROBE),
    "create_comparison": (ComparisonCreate, examples.COMPARISON),
    "create_series": (SeriesCreate, examples.SERIES),
    "update_retention": (RetentionUpdate, examples.RETENTION),
}


def test_request_bodies_carry_examples_that_the_schemas_accept(schema: dict):
    by_id = {operation["operationId"]: operation for _, _, operation in operations(schema)}
    for operation_id, (model, named) in BODIES.items():
        shown = by_id[operation_id]["requestBody"]["content"]["application/json"]["examples"]
        assert shown == named and shown
        for example in named.values():
            model.model_validate(example["value"])  # raises if an example no longer fits its schema
    upload = by_id["create_dataset"]["requestBody"]["content"]["multipart/form-data"]
    assert upload["examples"] == examples.DATASET
