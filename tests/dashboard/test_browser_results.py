"""The results figures in headless Chromium: ablation intervals, role-transfer flow, checkpoint series, two audits.

Each figure is checked against the data the API holds (interval ends, flow counts, series points), its
downloads against the same data, and no page may log a console error (the shared ``page`` fixture).
"""

from __future__ import annotations

import copy
import csv
import io
import os
import re

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service.admin import create_api_key
from service.models import Comparison, Job, ModelSource, Score, Tenant, UnitMap
from ssah_engine.evaluation.intervals import rate_with_interval
from tests.dashboard.test_browser import (  # noqa: F401 (fixtures)
    browser,
    finished,
    page,
    screenshot,
    server,
    tiny_summary,
)
from tests.service.conftest import DEFAULT_DB, build_database

pytestmark = pytest.mark.slow

CLASSES = ("SCU", "UCU", "CU", "RU")
CROSSTAB = {
    "classes": list(CLASSES),
    "counts": [[7, 1, 2, 0], [0, 9, 1, 0], [1, 0, 50, 3], [0, 0, 4, 11]],
    "unchanged_fraction": 0.873,
}


@pytest.fixture(scope="module")
def database_url() -> str:
    url = make_url(os.environ.get("SSAH_TEST_DATABASE_URL", DEFAULT_DB))
    url = url.set(database=f"{url.database}_results").render_as_string(hide_password=False)
    build_database(url)
    return url


def outcomes(successes: int, total: int) -> list[bool]:
    return [True] * successes + [False] * (total - successes)


def metrics(prompt_format: str, ablation: dict | None, asr: tuple[int, int], openings: tuple[int, int]) -> dict:
    """An evaluation's stored metrics: Wilson intervals per condition, as the engine writes them."""
    by_condition = lambda pair, shift: {  # noqa: E731
        "system": rate_with_interval(outcomes(pair[0], 32)),
        "no_system": rate_with_interval(outcomes(min(32, pair[0] + shift), 32)),
    }
    return {
        "ablation": ablation,
        "safety": {
            "refusal_list": "ssah-31",
            "prompt_format": prompt_format,
            "asr": asr[0] / 32,
            "intervals": {"ssah-31": {"asr": by_condition(asr, asr[1]), "over_refusal": {}}},
            "refusal_openings": {"harmful": by_condition(openings, openings[1])},
        },
        "utility": {"perplexity": 12.5},
    }


def swapped(summary: dict) -> dict:
    """The summary with SCU and RU exchanged: a second audit whose classes differ from the first."""
    other = copy.deepcopy(summary)
    other["classes"]["SCU"], other["classes"]["RU"] = summary["classes"]["RU"], summary["classes"]["SCU"]
    for layer in other["layers"]:
        for part in ("heads", "neurons"):
            layer[part]["SCU"], layer[part]["RU"] = layer[part]["RU"], layer[part]["SCU"]
    return other


def ablated(classes: list[str], control: str | None = None, seed: int = 0) -> dict:
    return {
        "classes": classes,
        "control": control,
        "seed": seed,
        "compensation": "none",
        "units": 12,
        "heads": 2,
        "neurons": 10,
    }


ARMS = [  # (format, ablation spec, asr successes and shift, opening successes and shift)
    ("chat", None, (3, 1), (28, -2)),
    ("chat", ablated(["SCU"]), (30, 2), (1, 0)),
    ("chat", ablated(["SCU"], "random", 0), (5, 0), (25, 1)),
    ("chat", ablated(["SCU"], "random", 1), (6, 1), (24, 0)),
    ("chat", ablated(["RU"]), (4, 0), (27, 0)),
    ("chat", ablated(["UCU"]), (12, 3), (16, 2)),
    ("plain", None, (8, 2), (20, 1)),
    ("plain", ablated(["SCU"]), (31, 1), (0, 0)),
]
SERIES = [("100", 0.5, 0.0625), ("200", 0.25, 0.125), ("1000", 0.75, 0.0)]  # checkpoint_step, asr, over_refusal


@pytest.fixture(scope="module")
def data(database_url: str, tiny_summary: dict) -> dict:  # noqa: F811
    """An ablation study of one model, two audits with their comparison, and a labelled checkpoint series."""
    engine = sa.create_engine(database_url)
    with Session(engine, expire_on_commit=False) as db:
        key = create_api_key(db, "results")
        tenant_id = db.scalars(sa.select(Tenant.id).where(Tenant.name == "results")).one()
        model = ModelSource(tenant_id=tenant_id, name="studied", source="builtin:tiny-llama")
        db.add(model)
        db.flush()
        audit = Job(tenant_id=tenant_id, kind="audit", model_id=model.id, params={}, **finished())
        other = Job(tenant_id=tenant_id, kind="audit", model_id=model.id, params={}, **finished())
        db.add_all([audit, other])
        db.flush()
        comparison = Job(
            tenant_id=tenant_id,
            kind="comparison",
            model_id=model.id,
            params={"before_audit_id": str(audit.id), "after_audit_id": str(other.id)},
            **finished(),
        )
        db.add(comparison)
        db.add_all(
            [UnitMap(job_id=audit.id, summary=tiny_summary), UnitMap(job_id=other.id, summary=swapped(tiny_summary))]
        )
        evaluations = []
        for prompt_format, spec, asr, openings in ARMS:
            params = {"audit_id": str(audit.id), "ablate": spec["classes"]} if spec else {}
            evaluation = Job(tenant_id=tenant_id, kind="evaluation", model_id=model.id, params=params, **finished())
            db.add(evaluation)
            db.flush()
            stored = metrics(prompt_format, spec, asr, openings)
            db.add(Score(job_id=evaluation.id, protocol_hash="ab" * 32, metrics=stored))
            evaluations.append((str(evaluation.id), stored))
        db.add(Comparison(job_id=comparison.id, crosstab=CROSSTAB))
        series = []
        for step, asr, over in SERIES:
            checkpoint = ModelSource(
                tenant_id=tenant_id,
                name=f"ckpt-{step}",
                source="builtin:tiny-llama",
                labels={"run": "r7", "checkpoint_step": step},
            )
            db.add(checkpoint)
            db.flush()
            point_audit = Job(tenant_id=tenant_id, kind="audit", model_id=checkpoint.id, params={}, **finished())
            point_eval = Job(tenant_id=tenant_id, kind="evaluation", model_id=checkpoint.id, params={}, **finished())
            db.add_all([point_audit, point_eval])
            db.flush()
            summary = tiny_summary if step != "200" else swapped(tiny_summary)
            db.add(UnitMap(job_id=point_audit.id, summary=summary))
            db.add(
                Score(
                    job_id=point_eval.id,
                    protocol_hash="cd" * 32,
                    metrics={"safety": {"asr": asr, "over_refusal": over}},
                )
            )
            series.append({"step": step, "summary": summary, "asr": asr, "over_refusal": over, "audit": point_audit})
        first, second = series[0]["audit"], series[1]["audit"]  # the role transfer of 100 -> 200 is known
        transition = Job(
            tenant_id=tenant_id,
            kind="comparison",
            model_id=first.model_id,
            params={"before_audit_id": str(first.id), "after_audit_id": str(second.id)},
            **finished(),
        )
        db.add(transition)
        db.flush()
        db.add(Comparison(job_id=transition.id, crosstab=CROSSTAB))
        db.commit()
    yield {
        "engine": engine,
        "key": key,
        "audit": str(audit.id),
        "other": str(other.id),
        "comparison": str(comparison.id),
        "evaluations": evaluations,
        "series": series,
    }
    engine.dispose()


def figure_shot(page, selector: str, name: str) -> None:
    """One figure's screenshot (SSAH_SCREENSHOT_DIR), for the docs."""
    if directory := os.environ.get("SSAH_SCREENSHOT_DIR"):
        page.locator(selector).first.screenshot(path=f"{directory}/{name}.png")


def rows_labels(rows: list[dict]) -> list[str]:
    return [row["label"] for row in rows]


def svg_x(page, chart: str, value: float) -> float:
    left, width = (float(page.get_attribute(chart, name)) for name in ("data-left", "data-plot-width"))
    return left + width * value


def test_ablation_error_bars_are_the_stored_wilson_intervals(page, server, data):
    page.goto(f"{server}/dashboard/#/audit/{data['audit']}")
    chart = "figure[data-figure=ablation-asr-chat] svg.chart.intervals"
    page.wait_for_selector(chart)
    assert page.locator("svg.chart.intervals").count() == 4  # ASR and refusal openings, in two formats
    screenshot(page, "ablation")
    figure_shot(page, "figure[data-figure=ablation-asr-chat]", "figure-ablation")
    rows = page.eval_on_selector_all(
        f"{chart} g.interval-row",
        """rows => rows.map(r => ({label: r.dataset.label, points: [...r.querySelectorAll('g.interval')].map(g => ({
            condition: g.dataset.condition, rate: Number(g.dataset.rate), low: Number(g.dataset.low),
            high: Number(g.dataset.high), x1: Number(g.querySelector('line.bar').getAttribute('x1')),
            x2: Number(g.querySelector('line.bar').getAttribute('x2')),
            cx: Number(g.querySelector('circle.rate').getAttribute('cx'))}))}))""",
    )
    assert [r["label"] for r in rows] == [
        "dense",
        "minus SCU",
        "random matched to SCU, seed 0",
        "random matched to SCU, seed 1",
        "minus RU",
        "minus UCU",
    ]
    chat = [stored for _, stored in data["evaluations"] if stored["safety"]["prompt_format"] == "chat"]
    for row, stored in zip(rows, chat):
        intervals = stored["safety"]["intervals"]["ssah-31"]["asr"]
        assert [p["condition"] for p in row["points"]] == list(intervals)
        for point in row["points"]:
            expected = intervals[point["condition"]]
            assert [point["rate"], point["low"], point["high"]] == [expected["rate"], *expected["ci95"]]
            assert point["x1"] == pytest.approx(svg_x(page, chart, expected["ci95"][0]))
            assert point["x2"] == pytest.approx(svg_x(page, chart, expected["ci95"][1]))
            assert point["cx"] == pytest.approx(svg_x(page, chart, expected["rate"]))
    # The random control's two seeds: a band from the lower to the higher of their mean rates, on both rows.
    seeds = [stored["safety"]["intervals"]["ssah-31"]["asr"] for stored in chat[2:4]]
    means = [sum(v["rate"] for v in s.values()) / len(s) for s in seeds]
    bands = page.eval_on_selector_all(
        f"{chart} rect.range",
        "rs => rs.map(r => [r.closest('g').dataset.label, Number(r.dataset.low), Number(r.dataset.high)])",
    )
    assert bands == [[label, min(means), max(means)] for label in rows_labels(rows)[2:4]]
    with page.expect_download() as download:
        page.click("figure[data-figure=ablation-openings-plain] button[data-format=csv]")
    table = list(csv.DictReader(io.StringIO(open(download.value.path()).read())))
    plain = [(eid, stored) for eid, stored in data["evaluations"] if stored["safety"]["prompt_format"] == "plain"]
    expected = [
        (eid, c, v["ci95"]) for eid, stored in plain for c, v in stored["safety"]["refusal_openings"]["harmful"].items()
    ]
    assert [
        (r["evaluation_id"], r["condition"], [float(r["ci95_low"]), float(r["ci95_high"])]) for r in table
    ] == expected


def flows(page, selector: str) -> list[dict]:
    return page.eval_on_selector_all(
        f"{selector} path.flow",
        "ps => ps.map(p => ({from: p.dataset.from, to: p.dataset.to, count: Number(p.dataset.count),"
        " thickness: Number(p.dataset.thickness), d: p.getAttribute('d')}))",
    )


def test_role_transfer_flow_bands_are_the_matrix_cells(page, server, data):
    page.goto(f"{server}/dashboard/#/comparison/{data['comparison']}")
    page.wait_for_selector("svg.chart.sankey")
    bands = flows(page, "svg.chart.sankey")
    screenshot(page, "role-transfer")
    cells = {(a, b): n for a, row in zip(CLASSES, CROSSTAB["counts"]) for b, n in zip(CLASSES, row) if n}
    assert {(f["from"], f["to"]): f["count"] for f in bands} == cells
    assert len(bands) == len(cells)
    scale = float(page.get_attribute("svg.chart.sankey", "data-scale"))
    for band in bands:
        assert band["thickness"] == pytest.approx(max(1.0, band["count"] * scale), abs=1e-3)
        ys = [float(v) for v in re.findall(r",(-?[\d.]+)", band["d"])]
        assert ys[4] - ys[3] == pytest.approx(band["thickness"], abs=0.02)  # right end: y and y + thickness
    nodes = page.eval_on_selector_all(
        "svg.chart.sankey rect.node", "rs => rs.map(r => [r.dataset.side, r.dataset.class, Number(r.dataset.count)])"
    )
    rows = {c: sum(row) for c, row in zip(CLASSES, CROSSTAB["counts"])}
    columns = {c: sum(row[j] for row in CROSSTAB["counts"]) for j, c in enumerate(CLASSES)}
    assert sorted(nodes) == sorted(
        [["before", c, rows[c]] for c in CLASSES] + [["after", c, columns[c]] for c in CLASSES]
    )
    page.select_option("select.sankey-mode", "rows")
    page.wait_for_selector("svg.chart.sankey[data-mode=rows]")
    heights = page.eval_on_selector_all(
        "svg.chart.sankey rect.node[data-side=before]", "rs => rs.map(r => Number(r.getAttribute('height')))"
    )
    assert max(heights) - min(heights) < 0.01  # every class before the same height: bands are row shares
    with page.expect_download() as download:
        page.click("figure.figure button[data-format=csv]")
    table = list(csv.DictReader(io.StringIO(open(download.value.path()).read())))
    assert {(r["before"], r["after"]): int(r["units"]) for r in table if int(r["units"])} == cells
    with page.expect_download() as download:
        page.click("figure.figure button[data-format=svg]")
    markup = open(download.value.path()).read()
    assert markup.startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in markup
    assert markup.count('class="flow"') == len(cells)
    with page.expect_download() as download:
        page.click("figure.figure button[data-format=png]")
    assert open(download.value.path(), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_series_points_are_the_series_api_values(page, server, data):
    page.goto(f"{server}/dashboard/#/series?order_by=checkpoint_step&labels=run%3Dr7")
    page.wait_for_selector("#series-points")
    screenshot(page, "series")
    answer = page.evaluate(
        """async () => (await fetch('/v1/series', {method: 'POST', headers: {'Content-Type': 'application/json',
            Authorization: 'Bearer ' + localStorage.getItem('ssah.apiKey')},
            body: JSON.stringify({order_by: 'checkpoint_step', labels: {run: 'r7'}, compare: false})})).json()"""
    )
    assert [p["value"] for p in answer["points"]] == ["100", "200", "1000"]  # numeric order
    for name in CLASSES:
        drawn = page.eval_on_selector_all(
            f"svg.chart.points circle.point[data-series={name}]",
            "cs => cs.map(c => [c.dataset.x, Number(c.dataset.y)])",
        )
        assert drawn == [[p["value"], p["classes"][name]["unit_fraction"]] for p in answer["points"]]
    asr = page.eval_on_selector_all(
        "svg.chart.points circle.point[data-series=ASR]", "cs => cs.map(c => [c.dataset.x, Number(c.dataset.y)])"
    )
    assert asr == [[p["value"], p["safety"]["asr"]] for p in answer["points"]]
    assert asr == [[s["step"], s["asr"]] for s in data["series"]]
    # Numeric x: the gap 200 -> 1000 is eight times 100 -> 200.
    xs = page.eval_on_selector_all(
        "svg.chart.points circle.point[data-series=ASR]", "cs => cs.map(c => Number(c.getAttribute('cx')))"
    )
    assert xs[2] - xs[1] == pytest.approx(8 * (xs[1] - xs[0]), abs=0.5)
    assert page.locator("#series-transitions tbody tr").count() == 2
    assert [t["crosstab"] is not None for t in answer["transitions"]] == [True, False]
    assert {
        (f["from"], f["to"]): f["count"] for f in flows(page, ".series-flow[data-before='100'] svg.chart.sankey")
    } == {(a, b): n for a, row in zip(CLASSES, CROSSTAB["counts"]) for b, n in zip(CLASSES, row) if n}
    assert page.locator(".series-flow").count() == 1


def test_two_audits_side_by_side_with_their_role_transfer(page, server, data):
    page.goto(f"{server}/dashboard/#/compare?a={data['audit']}&b={data['other']}")
    page.wait_for_selector("svg.chart.sankey")
    screenshot(page, "compare")
    shares = {
        name: page.eval_on_selector_all(
            f"figure[data-figure=compare-{name}-share] circle.point", "cs => cs.map(c => Number(c.dataset.y))"
        )
        for name in CLASSES
    }
    with Session(data["engine"]) as db:
        first, second = (
            db.scalars(sa.select(UnitMap.summary).where(UnitMap.job_id == job_id)).one()
            for job_id in (data["audit"], data["other"])
        )
    for name in CLASSES:
        assert shares[name] == [first["classes"][name]["unit_fraction"], second["classes"][name]["unit_fraction"]]
    per_layer = page.eval_on_selector_all(
        "figure[data-figure=compare-SCU-per-layer] circle.point[data-series='B SCU']",
        "cs => cs.map(c => Number(c.dataset.y))",
    )
    assert per_layer == [layer["heads"]["SCU"] + layer["neurons"]["SCU"] for layer in second["layers"]]
    assert {(f["from"], f["to"]): f["count"] for f in flows(page, "svg.chart.sankey")} == {
        (a, b): n for a, row in zip(CLASSES, CROSSTAB["counts"]) for b, n in zip(CLASSES, row) if n
    }
    page.goto(f"{server}/dashboard/#/compare?a={data['other']}&b={data['other']}")
    page.wait_for_selector("#no-comparison")


def test_the_series_and_compare_forms_lead_to_their_figures(page, server, data):
    page.click("header nav a[href='#/series']")
    page.wait_for_selector("#series-form")
    page.fill("#series-form input[name=labels]", "run=nothing-here")
    page.click("#series-form button[type=submit]")
    page.wait_for_selector("#series-empty")
    page.fill("#series-form input[name=labels]", "run=r7")
    page.click("#series-form button[type=submit]")
    page.wait_for_selector("#series-points")
    assert page.locator("#series-points tbody tr").count() == len(data["series"])
    page.click("header nav a[href='#/compare']")
    page.wait_for_selector("#compare-form")
    page.select_option("#compare-form select[name=a]", data["audit"])
    page.select_option("#compare-form select[name=b]", data["other"])
    page.click("#compare-form button[type=submit]")
    page.wait_for_selector("#compare-classes")
    assert page.locator("svg.chart.sankey").count() == 1
