"""The audit page's unit-map figures drawn from the stored unit map file, read back against the unit map.

Browser part as tests/dashboard/test_browser.py (Debian's chromium through playwright); its fixtures are
reused, with this module's own data and a server whose artifact folder holds the unit maps as the worker
publishes them (a zip). Two audits: a real tiny audit run in-process, and a synthetic map with more units.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.admin import create_api_key
from service.models import Job, ModelSource, Tenant, UnitMap
from ssah_engine.classes import CLASSES
from ssah_engine.unitmap_arrays import cut_thresholds
from tests.dashboard.test_browser import (  # noqa: F401
    browser,
    database_url,
    finished,
    page,
    running_api,
    screenshot,
)
from tests.engine.test_unitmap_arrays import synthetic_map

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("unit-map-art")


@pytest.fixture(scope="module")
def unit_maps():
    from ssah_engine.audit import AuditConfig, run_audit
    from ssah_engine.data import load_dataset
    from ssah_engine.loading import LoadOptions, load_model

    loaded = load_model("builtin:tiny-llama", LoadOptions(device="cpu"))
    safety = load_dataset("builtin:safety", require_response=True)
    utility = load_dataset("builtin:utility", require_response=True)
    tiny = run_audit(loaded, safety, utility, AuditConfig(samples=4, max_length=256, batch_size=4))
    return {"tiny": tiny, "synthetic": synthetic_map(4), "budget": synthetic_map(5, utility_only=True)}


@pytest.fixture(scope="module")
def data(database_url: str, artifact_dir: Path, unit_maps: dict) -> dict:  # noqa: F811
    engine = sa.create_engine(database_url)
    audits = {}
    with Session(engine, expire_on_commit=False) as db:
        key = create_api_key(db, "unit-map-page")
        tenant_id = db.scalars(sa.select(Tenant.id).where(Tenant.name == "unit-map-page")).one()
        model = ModelSource(tenant_id=tenant_id, name="tiny", source="builtin:tiny-llama")
        db.add(model)
        db.flush()
        for name, unit_map in unit_maps.items():
            job = Job(tenant_id=tenant_id, kind="audit", model_id=model.id, params={}, **finished())
            db.add(job)
            db.flush()
            folder = artifact_dir / str(tenant_id) / "jobs" / str(job.id)
            archive = shutil.make_archive(str(folder / "unit_map"), "zip", unit_map.save(folder / "unit_map"))
            uri = str(Path(archive).relative_to(artifact_dir))
            db.add(UnitMap(job_id=job.id, summary=unit_map.summary(), artifact_uri=uri))
            audits[name] = str(job.id)
        db.commit()
    yield {"key": key, "audits": audits}
    engine.dispose()


@pytest.fixture(scope="module")
def server(database_url: str, data: dict, artifact_dir: Path) -> str:  # noqa: F811
    with running_api(database_url, artifact_dir) as base:
        yield base


def per_class(page, selector: str, attribute: str | None = None) -> dict[str, int]:
    """Units per class in the marks matching ``selector``: their ``data-<attribute>`` summed, or their number."""
    script = f"els => els.map(e => [e.dataset.class, {f'Number(e.dataset.{attribute})' if attribute else '1'}])"
    out = {name: 0 for name in CLASSES}
    for name, n in page.eval_on_selector_all(selector, script):
        out[name] += n
    return out


@pytest.mark.parametrize("which", ["tiny", "synthetic"])
def test_unit_map_figures_show_the_units_of_the_unit_map(page, server, data, unit_maps, which):  # noqa: F811
    unit_map = unit_maps[which]
    summary, space = unit_map.summary(), unit_map.space
    page.goto(f"{server}/dashboard/#/audit/{data['audits'][which]}")
    page.wait_for_selector("#unit-map-figures[data-state=rendered]")
    classes, layers = summary["classes"], summary["layers"]

    # Scatter: every neuron in a bin of its class, every head a point of its class, three cut lines.
    assert per_class(page, "svg.unit-scatter path.density", "units") == {n: classes[n]["neurons"] for n in CLASSES}
    assert per_class(page, "svg.unit-scatter circle.head") == {n: classes[n]["heads"] for n in CLASSES}
    cuts = page.eval_on_selector_all("svg.unit-scatter polyline.cut", "ps => ps.map(p => p.dataset.cut)")
    assert set(cuts) == {name.lower() for name in CLASSES if name != "CU" and classes[name]["units"]}
    # Each class region's name is drawn inside that region (read back through the plot's asinh axes).
    lo, hi = (float(page.get_attribute("svg.unit-scatter", f"data-{end}") or 0) for end in ("lo", "hi"))
    a, span = math.asinh(lo), math.asinh(hi) - math.asinh(lo)
    cut = cut_thresholds(unit_map.labels.numpy(), unit_map.z_safety.numpy(), unit_map.z_utility.numpy())  # type: ignore[union-attr]
    spots = page.eval_on_selector_all(
        "svg.unit-scatter text.region",
        "ts => ts.map(t => [t.dataset.class, +t.getAttribute('x'), +t.getAttribute('y')])",
    )
    assert {name for name, _, _ in spots} >= {"SCU", "UCU"}
    for name, x, y in spots:
        zs, zu = math.sinh(a + span * (x - 58) / 500), math.sinh(a + span * (1 - (y - 46) / 500))
        scu, ucu = zs - zu >= cut["scu"], zs - zu <= cut["ucu"]
        ru = not scu and not ucu and zs + zu <= cut["ru"]
        assert {"SCU": scu, "UCU": ucu, "RU": ru, "CU": not (scu or ucu or ru)}[name], (name, zs, zu, cut)

    # Layer x head heatmaps: each layer's cells carry its head counts; the diff cells carry z_S - z_U.
    cells = page.eval_on_selector_all(
        "svg.head-grid[data-mode=label] rect.cell", "rs => rs.map(r => [+r.dataset.layer, r.dataset.class])"
    )
    assert len(cells) == space.total_heads
    for index, layer in enumerate(layers):
        assert {n: sum(1 for at, c in cells if at == index and c == n) for n in CLASSES} == layer["heads"]
    values = page.eval_on_selector_all(
        "svg.head-grid[data-mode=diff] rect.cell", "rs => rs.map(r => Number(r.dataset.value))"
    )
    expected = (unit_map.z_safety - unit_map.z_utility)[: space.total_heads].tolist()  # type: ignore[operator]
    assert values == pytest.approx(expected, abs=2e-4)

    # SCU and RU per layer, on their own scales: one bar per layer and part, its count the summary's.
    bars = page.eval_on_selector_all(
        "svg.layer-counts rect.count",
        "rs => rs.map(r => [r.dataset.class, r.dataset.part, +r.dataset.layer, +r.dataset.count, +r.getAttribute('height')])",
    )
    assert len(bars) == 4 * len(layers)
    for name, part, layer, count, height in bars:
        assert count == layers[layer][part][name]
        top = max(entry[part][name] for entry in layers)
        assert height == pytest.approx(150 * count / max(top, 1), abs=0.01)  # the tallest bar fills its panel

    # The zoom opens on the layer with the most SCU neurons; another layer can be chosen.
    scu = [layer["neurons"]["SCU"] for layer in layers]
    zoomed = scu.index(max(scu))
    assert page.get_attribute("svg.zoom", "data-layer") == str(zoomed)
    assert per_class(page, "svg.zoom path.points", "units") == layers[zoomed]["neurons"]
    other = (zoomed + 1) % len(layers)
    page.select_option("#zoom-layer", str(other))
    page.wait_for_selector(f"svg.zoom[data-layer='{other}']")
    assert per_class(page, "svg.zoom path.points", "units") == layers[other]["neurons"]
    screenshot(page, f"audit-unit-map-{which}")


def test_unit_map_figures_download_their_data(page, server, data, unit_maps):  # noqa: F811
    summary = unit_maps["synthetic"].summary()
    page.goto(f"{server}/dashboard/#/audit/{data['audits']['synthetic']}")
    page.wait_for_selector("#unit-map-figures[data-state=rendered]")
    counts = "figure[data-figure=unit-map-layer-counts]"
    with page.expect_download() as download:
        page.click(f"{counts} button[data-format=csv]")
    table = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(table) == len(summary["layers"])
    for row, layer in zip(table, summary["layers"]):
        for name in CLASSES:
            assert (int(row[f"{name}_heads"]), int(row[f"{name}_neurons"])) == (
                layer["heads"][name],
                layer["neurons"][name],
            )
    with page.expect_download() as download:
        page.click("figure[data-figure=unit-map-scatter] button[data-format=csv]")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    for name in CLASSES:
        binned = sum(int(r["units"]) for r in rows if r["class"] == name and r["part"] == "neurons")
        assert binned == summary["classes"][name]["neurons"]
    with page.expect_download() as download:
        page.click("figure[data-figure=unit-map-scatter] button[data-format=svg]")
    markup = Path(download.value.path()).read_text()
    assert markup.startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in markup and "path" in markup
    with page.expect_download() as download:
        page.click("figure[data-figure=unit-map-head-labels] button[data-format=png]")
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_utility_only_map_shows_its_labels_and_counts(page, server, data, unit_maps):  # noqa: F811
    summary = unit_maps["budget"].summary()
    page.goto(f"{server}/dashboard/#/audit/{data['audits']['budget']}")
    page.wait_for_selector("#unit-map-figures[data-state=rendered]")
    assert page.locator("svg.unit-scatter").count() == 0 and page.locator("svg.head-grid[data-mode=diff]").count() == 0
    assert "utility-only" in page.inner_text("#unit-map-figures")
    cells = page.eval_on_selector_all("svg.head-grid rect.cell", "rs => rs.map(r => r.dataset.class)")
    assert {name: cells.count(name) for name in CLASSES} == {n: summary["classes"][n]["heads"] for n in CLASSES}
    bars = page.eval_on_selector_all(
        "svg.layer-counts rect.count[data-class=RU]", "rs => rs.map(r => +r.dataset.count)"
    )
    assert sum(bars) == summary["classes"]["RU"]["units"] > 0
