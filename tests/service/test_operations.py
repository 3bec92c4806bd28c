"""Operations (issue 18, part 7): JSON log lines carrying the request and tenant, Prometheus multiprocess mode."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.deps import PrincipalDep
from service.logs import JsonFormatter
from tests.service.conftest import REPO, Tenant_


def _json_handler() -> logging.Handler:
    handlers = [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]
    assert len(handlers) == 1, logging.getLogger().handlers
    return handlers[0]


def test_json_log_lines_carry_the_request_and_tenant_id(make_app: Callable[..., FastAPI], alice: Tenant_):
    root = logging.getLogger()
    level = root.level
    app = make_app(log_format="json")
    handler = _json_handler()  # installed by create_app for SSAH_LOG_FORMAT=json
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]

    @app.get("/log-probe")
    def log_probe(principal: PrincipalDep) -> dict[str, str]:
        logging.getLogger("ssah_engine.deep").info("deep %s", "inside")  # knows no id: the context does
        return {}

    try:
        with TestClient(app) as client:
            r = client.get("/log-probe", headers=alice.headers)
            assert r.status_code == 200, r.text
        logging.getLogger("ssah_engine.deep").warning("after the request")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]  # every line is one object
    inside = [line for line in lines if line["message"] == "deep inside"]
    assert len(inside) == 1, lines
    assert inside[0]["request_id"] == r.headers["x-request-id"]
    assert inside[0]["tenant_id"] == str(alice.id)
    assert inside[0]["level"] == "INFO" and inside[0]["logger"] == "ssah_engine.deep"
    assert datetime.fromisoformat(inside[0]["timestamp"]).tzinfo is not None
    after = [line for line in lines if line["message"] == "after the request"]
    assert after and "request_id" not in after[0] and "tenant_id" not in after[0]  # the context ended with it


def test_text_logs_stay_the_default(make_app: Callable[..., FastAPI]):
    make_app()
    assert not [h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter)]


SCRAPE = """
import sys
from fastapi.testclient import TestClient
from service.main import create_app
from service.settings import Settings

app = create_app(Settings(database_url=sys.argv[1], broker_url=sys.argv[2]))
with TestClient(app) as client:
    client.get("/healthz")
    sys.stdout.write(client.get("/metrics").text)
"""

COUNT = """
import sys
from worker import metrics

for _ in range(int(sys.argv[1])):
    metrics.JOBS.labels("audit", "succeeded").inc()
metrics.DURATION.labels("audit").observe(2.0)
"""


def _python(code: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _sample(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, [line for line in text.splitlines() if line.startswith(name.split("{")[0])]
    return values[0]


def test_multiprocess_mode_adds_up_the_counters_of_every_process(tmp_path: Path, database_url: str, broker_url: str):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    _python(COUNT, "2", env=env)  # two worker processes, each gone when the API scrapes
    _python(COUNT, "3", env=env)
    text = _python(SCRAPE, database_url, broker_url, env=env)
    assert _sample(text, 'ssah_worker_jobs_total{kind="audit",outcome="succeeded"}') == 5.0
    assert _sample(text, 'ssah_worker_job_duration_seconds_count{kind="audit"}') == 2.0
    assert _sample(text, 'ssah_http_requests_total{method="GET",route="/healthz",status="200"}') == 1.0
    assert "# TYPE ssah_jobs gauge" in text  # still counted from the database
    # Without the directory the API sees only itself: the workers' counts are not there.
    alone = _python(
        SCRAPE, database_url, broker_url, env={k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    )
    assert 'ssah_worker_jobs_total{kind="audit"' not in alone
    assert _sample(alone, 'ssah_http_requests_total{method="GET",route="/healthz",status="200"}') == 1.0
