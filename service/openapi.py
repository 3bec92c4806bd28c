"""Print the app's OpenAPI description: ``python -m service.openapi > docs/openapi.json``."""

from __future__ import annotations

import json

from fastapi import FastAPI


def render(app: FastAPI) -> str:
    """The OpenAPI document of ``app`` as stable, indented JSON."""
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    from service.main import create_app

    print(render(create_app()), end="")
