"""The probe page: distance curves per k (with a compared probe), the gap, and unit-write histograms by class.

Browser part as tests/dashboard/test_browser.py (needs chromium and playwright); its fixtures are reused,
with this module's own data: two succeeded probes of a real (tiny) model run in-process.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.admin import create_api_key
from service.main import create_app
from service.models import Job, ModelSource, ProbeResult, Tenant
from tests.dashboard.test_browser import (  # noqa: F401
    browser,
    database_url,
    finished,
    page,
    screenshot,
    server,
)


def test_probe_script_is_served_before_app_js():
    client = TestClient(create_app())
    response = client.get("/dashboard/probe.js")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript")
    html = client.get("/dashboard/").text
    assert html.index('src="probe.js"') < html.index('src="app.js"')


@pytest.fixture(scope="module")
def probe_summaries() -> list[dict]:
    from ssah_engine.audit import AuditConfig, run_audit
    from ssah_engine.data import load_dataset
    from ssah_engine.loading import LoadOptions, load_model
    from ssah_engine.probe import ProbeConfig, run_probe

    safety = load_dataset("builtin:safety", require_response=True)
    utility = load_dataset("builtin:utility", require_response=True)
    summaries = []
    for source in ("builtin:tiny-llama", "builtin:tiny-qwen2"):
        loaded = load_model(source, LoadOptions(device="cpu"))
        unit_map = run_audit(loaded, safety, utility, AuditConfig(samples=4, max_length=256, batch_size=4))
        config = ProbeConfig(ks=(2, 4, 6), queries=4, calibration=8)
        summaries.append(run_probe(loaded, safety, utility, config, unit_map=unit_map).data)
    return summaries


@pytest.fixture(scope="module")
def data(database_url: str, probe_summaries: list[dict]) -> dict:  # noqa: F811
    engine = sa.create_engine(database_url)
    with Session(engine, expire_on_commit=False) as db:
        key = create_api_key(db, "probe-page")
        tenant_id = db.scalars(sa.select(Tenant.id).where(Tenant.name == "probe-page")).one()
        model = ModelSource(tenant_id=tenant_id, name="tiny", source="builtin:tiny-llama")
        db.add(model)
        db.flush()
        jobs = [
            Job(tenant_id=tenant_id, kind="probe", model_id=model.id, params={}, **finished()) for _ in probe_summaries
        ]
        db.add_all(jobs)
        db.flush()
        db.add_all([ProbeResult(job_id=job.id, summary=summary) for job, summary in zip(jobs, probe_summaries)])
        db.commit()
    yield {"key": key, "probes": [str(job.id) for job in jobs], "summaries": probe_summaries}
    engine.dispose()


def test_probe_page_draws_the_curves_the_gap_and_the_histograms(page, server, data):  # noqa: F811
    first, second = data["probes"]
    summary = data["summaries"][0]
    page.goto(f"{server}/dashboard/#/probe/{first}")
    page.wait_for_selector("svg.chart.curves")
    curves = page.locator("svg.chart.curves[data-label='query + k refusal tokens'] polyline.curve")
    assert curves.count() == 3  # one per k
    assert curves.first.get_attribute("data-points") == str(summary["model"]["layers"])
    units = page.eval_on_selector_all(
        "svg.chart.histogram", "s => s.map(x => [x.dataset.class, Number(x.dataset.units)])"
    )
    assert units == [[c, summary["unit_writes"]["classes"][c]["units"]] for c in ("SCU", "UCU", "CU", "RU")]
    assert page.locator("table.writes tbody tr").count() == 4
    screenshot(page, "probe")
    page.select_option("#compare", second)
    page.wait_for_selector("svg.chart.curves[data-curves='6']")  # this probe's 3 curves and the compared 3
    assert page.locator("polyline.curve[data-name='compare k=2']").count() == 3  # refusal, compliance, gap
