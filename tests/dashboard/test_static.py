"""The dashboard's static files are served by the API itself, and nothing else is."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.main import create_app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


def test_dashboard_root_serves_the_page_without_external_assets(client):
    response = client.get("/dashboard/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script src="app.js">' in response.text
    assert "http" not in response.text  # no CDN, no external asset
    assert client.get("/dashboard", follow_redirects=False).headers["location"] == "/dashboard/"


@pytest.mark.parametrize(("name", "media_type"), [("app.js", "text/javascript"), ("style.css", "text/css")])
def test_assets_have_their_media_type(client, name, media_type):
    response = client.get(f"/dashboard/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)


@pytest.mark.parametrize("name", ["__init__.py", "../__init__.py", "%2e%2e/__init__.py", "nope.js"])
def test_only_static_files_are_served(client, name):
    assert client.get(f"/dashboard/{name}").status_code == 404


def test_dashboard_is_not_in_the_openapi_schema(client):
    assert not any(path.startswith("/dashboard") for path in client.get("/openapi.json").json()["paths"])
