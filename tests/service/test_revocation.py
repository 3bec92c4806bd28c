"""`ssah keys revoke` against a committed database: the revoked key answers 401 once the key cache TTL ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from service.main import create_app
from service.settings import Settings
from tests.service.conftest import REPO, build_database, recreate_database

TTL = 1.0


@pytest.fixture
def committed_url(database_url: str) -> Iterator[str]:
    """A scratch database the CLI (another process) can see: the usual per-test transaction would hide rows."""
    url = make_url(database_url).set(database=make_url(database_url).database + "_keys")
    rendered = url.render_as_string(hide_password=False)
    build_database(rendered)
    yield rendered
    recreate_database(rendered)  # leave it empty


def ssah_keys(url: str, *args: str) -> str:
    env = {**os.environ, "SSAH_DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-m", "ssah.cli", "keys", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_ssah_keys_revoke_takes_effect_within_the_cache_ttl(committed_url: str, broker_url: str, tmp_path):
    key = ssah_keys(committed_url, "create", "--tenant", "acme")
    app = create_app(
        Settings(
            database_url=committed_url,
            broker_url=broker_url,
            artifact_dir=tmp_path,
            api_key_cache_seconds=TTL,
            rate_limit_per_minute=0,
        )
    )
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        assert client.get("/v1/jobs", headers=headers).status_code == 200  # now cached for TTL seconds
        assert ssah_keys(committed_url, "revoke", key[:13]) == f"revoked {key[:13]}"
        revoked_at = time.monotonic()
        deadline = revoked_at + TTL + 2.0
        while (status := client.get("/v1/jobs", headers=headers).status_code) == 200:
            assert time.monotonic() < deadline, "the revoked key still works after the cache TTL"
            time.sleep(0.1)
        assert status == 401
        assert time.monotonic() - revoked_at <= TTL + 2.0
        # Listed after the timed window: each `ssah keys` run is a process start, seconds on a loaded machine.
        assert "\t" in ssah_keys(committed_url, "list") and ssah_keys(committed_url, "list").split("\t")[-1]
        # And it stays revoked: no cache entry can bring it back.
        time.sleep(TTL)
        r = client.get("/v1/jobs", headers=headers)
        assert r.status_code == 401 and r.json()["detail"] == "unknown or revoked API key"


def test_the_default_ttl_is_short():
    assert Settings().api_key_cache_seconds == 5.0
