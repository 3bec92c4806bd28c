"""The app's OpenAPI description: verb-first operation ids, problem+json errors.

Print it with ``python -m service.openapi > docs/openapi.json`` (a test compares the copy).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

PROBLEM_JSON = "application/problem+json"


def operation_id(route: APIRoute) -> str:
    """A route's operationId: its function's name, verb-first (``create_audit``, ``list_audits``)."""
    return route.name


def problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    """File each error's schema under ``application/problem+json`` only, the type the app answers with.

    FastAPI puts a response model under the route's media type (``application/json``), whatever the
    ``content`` a response declares; client generators would then expect JSON errors.
    """
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if PROBLEM_JSON in content and "application/json" in content:
                    content[PROBLEM_JSON] = {**content.pop("application/json"), **content[PROBLEM_JSON]}
    return schema


def shared_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the problems that middleware and shared dependencies raise, wherever they apply.

    ``service.body_guard`` refuses any ``/v1`` body past its route's limit (413); an ``Idempotency-Key``
    still in use by a concurrent request answers 409 (``service.api.deps.Idempotency``).
    """
    problem = schema.get("components", {}).get("schemas", {}).get("Problem")
    if problem is None:
        return schema
    for route, path in schema.get("paths", {}).items():
        for method, operation in path.items():
            responses = operation.setdefault("responses", {})
            headers = {p["name"].lower() for p in operation.get("parameters", []) if p.get("in") == "header"}
            statuses = []
            if route.startswith("/v1/") and method not in ("get", "head", "options"):
                statuses.append(("413", "Content Too Large: past this route's body limit; `limit` names the setting."))
            if "idempotency-key" in headers:
                statuses.append(("409", "Conflict: a request with the same Idempotency-Key is in progress."))
            for status, description in statuses:
                responses.setdefault(
                    status,
                    {
                        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                        "description": description,
                    },
                )
    return schema


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) answer the description with problem+json errors."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = build()
        return shared_problems(problem_media_types(schema)) if fresh else schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema


def render(app: FastAPI) -> str:
    """The OpenAPI document of ``app`` as stable, indented JSON."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    from service.main import create_app

    print(render(create_app()), end="")
