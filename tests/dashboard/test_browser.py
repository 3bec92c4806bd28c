"""The dashboard in headless Chromium against a running API holding real job data.

Needs Debian's chromium (/usr/bin/chromium, or SSAH_CHROMIUM) and the playwright package;
no browser is downloaded. Set SSAH_SCREENSHOT_DIR to keep screenshots of the main pages.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service.admin import create_api_key
from service.models import (
    Comparison,
    FinetuneResult,
    Job,
    ModelSource,
    Score,
    Tenant,
    UnitMap,
    utcnow,
)
from tests.service.conftest import (
    DEFAULT_BROKER,
    DEFAULT_DB,
    REPO,
    build_database,
)

pytestmark = pytest.mark.slow

CLASSES = ("SCU", "UCU", "CU", "RU")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def database_url() -> str:
    """A database of its own: the API server commits for real, outside any test transaction."""
    url = make_url(os.environ.get("SSAH_TEST_DATABASE_URL", DEFAULT_DB))
    url = url.set(database=f"{url.database}_dashboard").render_as_string(hide_password=False)
    build_database(url)
    return url


@pytest.fixture(scope="module")
def tiny_summary() -> dict:
    """The unit map summary of a real (tiny) audit, run in-process."""
    from ssah_engine.audit import AuditConfig, run_audit
    from ssah_engine.data import load_dataset
    from ssah_engine.loading import LoadOptions, load_model

    loaded = load_model("builtin:tiny-llama", LoadOptions(device="cpu"))
    safety = load_dataset("builtin:safety", require_response=True)
    utility = load_dataset("builtin:utility", require_response=True)
    return run_audit(loaded, safety, utility, AuditConfig(samples=4, max_length=256, batch_size=4)).summary()


def finished(**values) -> dict:
    return {"status": "succeeded", "progress": 1.0, "started_at": utcnow(), "finished_at": utcnow(), **values}


@pytest.fixture(scope="module")
def data(database_url: str, tiny_summary: dict) -> dict:
    """One tenant with a succeeded job of each kind and one audit still running."""
    engine = sa.create_engine(database_url)
    with Session(engine, expire_on_commit=False) as db:
        key = create_api_key(db, "dashboard")
        tenant_id = db.scalars(sa.select(Tenant.id).where(Tenant.name == "dashboard")).one()
        model = ModelSource(tenant_id=tenant_id, name="tiny", source="builtin:tiny-llama")
        db.add(model)
        db.flush()
        job = lambda kind, **values: Job(tenant_id=tenant_id, kind=kind, model_id=model.id, **values)
        audit = job("audit", params={"samples": 4}, **finished())
        running = job(
            "audit", params={}, status="running", progress=0.4, progress_message="scoring", started_at=utcnow()
        )
        db.add_all([audit, running])
        db.flush()
        evaluation = job("evaluation", params={"audit_id": str(audit.id), "ablate": "SCU"}, **finished())
        finetune = job("finetune", params={"audit_id": str(audit.id)}, **finished())
        comparison = job(
            "comparison", params={"before_audit_id": str(audit.id), "after_audit_id": str(audit.id)}, **finished()
        )
        db.add_all([evaluation, finetune, comparison])
        db.flush()
        metrics = {"safety": {"asr": 0.375, "over_refusal": 0.0625}, "utility": {"perplexity": 17.25}}
        crosstab = {
            "classes": list(CLASSES),
            "counts": [[7, 1, 2, 0], [0, 9, 1, 0], [1, 0, 50, 3], [0, 0, 4, 11]],
            "unchanged_fraction": 0.873,
        }
        db.add_all(
            [
                UnitMap(job_id=audit.id, summary=tiny_summary, artifact_uri=None),
                Score(job_id=evaluation.id, protocol_hash="ab12cd34" * 8, metrics=metrics),
                FinetuneResult(
                    job_id=finetune.id,
                    loss_curve={
                        "steps": [
                            {
                                "step": s,
                                "loss": 3 - 0.2 * s,
                                "lr": 1e-4,
                                **({"refusal_margin": 2 - 0.3 * s, "over_refusal_margin": -3.0} if s % 2 == 0 else {}),
                            }
                            for s in range(1, 11)
                        ],
                        "refusal_track": {
                            "baseline": {"step": 0, "refusal_margin": 2.5, "over_refusal_margin": -3.0},
                            "stop": None,
                        },
                        "evaluation": {
                            "before": metrics,
                            "after": {**metrics, "safety": {"asr": 0.5, "over_refusal": 0.0}},
                        },
                    },
                ),
                Comparison(job_id=comparison.id, crosstab=crosstab),
            ]
        )
        db.commit()
    yield {
        "engine": engine,
        "key": key,
        "audit": str(audit.id),
        "running": str(running.id),
        "evaluation": str(evaluation.id),
        "finetune": str(finetune.id),
        "comparison": str(comparison.id),
        "summary": tiny_summary,
    }
    engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_api(database_url: str, artifact_dir: Path):
    """A uvicorn process of the API on a free loopback port, over ``database_url``; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "SSAH_DATABASE_URL": database_url,
        "SSAH_ARTIFACT_DIR": str(artifact_dir),
        "SSAH_BROKER_URL": os.environ.get("SSAH_TEST_BROKER_URL", DEFAULT_BROKER),
        "SSAH_API_KEY_CACHE_SECONDS": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the API did not start")
        yield base
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def server(database_url: str, data: dict, tmp_path_factory) -> str:
    with running_api(database_url, tmp_path_factory.mktemp("art")) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=os.environ.get("SSAH_CHROMIUM", "/usr/bin/chromium"), args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server: str, data: dict, tmp_path):
    """A page with the key already entered, failing the test on any console error."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{server}/dashboard/")
    page.fill("#key", data["key"])
    page.click("#key-form button")
    page.wait_for_selector("#jobs")
    yield page
    context.close()
    assert errors == []


def screenshot(page, name: str) -> None:
    if directory := os.environ.get("SSAH_SCREENSHOT_DIR"):
        Path(directory).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(directory) / f"{name}.png"), full_page=True)


def test_every_page_renders_its_results(page, server, data):
    assert page.locator("#jobs tbody tr").count() == 5
    screenshot(page, "jobs")
    page.goto(f"{server}/dashboard/#/evaluation/{data['evaluation']}")
    page.wait_for_selector("table.scores")
    assert "ab12cd34" * 8 in page.inner_text("main")
    assert "0.3750" in page.inner_text("table.scores")
    screenshot(page, "evaluation")
    page.goto(f"{server}/dashboard/#/finetune/{data['finetune']}")
    page.wait_for_selector("svg.chart.line")
    assert page.get_attribute("svg.chart.line", "data-points") == "10"
    assert page.get_attribute("polyline.series.refusal-margin", "data-points") == "6"  # step 0 + 5 tracked
    assert "0.1250" in page.inner_text("table.before-after")  # asr 0.375 -> 0.5
    screenshot(page, "finetune")
    page.goto(f"{server}/dashboard/#/comparison/{data['comparison']}")
    page.wait_for_selector("table.heatmap")
    counts = page.eval_on_selector_all("td[data-count]", "cells => cells.map(c => Number(c.dataset.count))")
    assert counts == [7, 1, 2, 0, 0, 9, 1, 0, 1, 0, 50, 3, 0, 0, 4, 11]
    screenshot(page, "comparison")


def test_unit_map_picture_shows_the_counts_of_the_summary(page, server, data):
    page.goto(f"{server}/dashboard/#/audit/{data['audit']}")
    page.wait_for_selector("svg[data-part=neurons]")
    summary = data["summary"]
    for part in ("heads", "neurons"):
        bars = page.eval_on_selector_all(f"svg[data-part={part}] g.bar", "gs => gs.map(g => ({...g.dataset}))")
        assert len(bars) == len(summary["layers"])
        for bar, layer in zip(bars, summary["layers"]):
            assert {name: int(bar[name.lower()]) for name in CLASSES} == layer[part]
        for name in CLASSES:
            assert sum(int(bar[name.lower()]) for bar in bars) == summary["classes"][name][part]
    classes = page.inner_text("#classes")
    for name in CLASSES:
        assert f"{name}\t{summary['classes'][name]['units']}\t" in classes
    assert "Evaluation" in page.inner_text("main") and "0.3750" in page.inner_text("table.scores")
    screenshot(page, "audit")


def test_job_status_changes_on_screen_when_the_job_finishes(page, data):
    row = f"#job-{data['running']}"
    assert page.inner_text(f"{row} .status") == "running"
    with Session(data["engine"]) as db:
        job = db.get(Job, uuid.UUID(data["running"]))
        job.status, job.progress, job.finished_at = "succeeded", 1.0, utcnow()
        db.commit()
    page.wait_for_selector(f"{row}[data-status=succeeded]", timeout=10_000)
    assert page.inner_text(f"{row} .status") == "succeeded"
