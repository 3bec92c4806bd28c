"""Property-based fuzz over the OpenAPI description: whatever schemathesis sends, never a 5xx."""

from __future__ import annotations

import json

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
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
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=alice.headers, checks=[not_a_server_error])

    fuzz()
