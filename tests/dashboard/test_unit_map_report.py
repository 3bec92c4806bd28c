"""`ssah report` of an audit directory with its unit_map.safetensors: the unit-map figures read back."""

from __future__ import annotations

import base64
import csv
import io
import re

import pytest

from ssah.report import build_report
from ssah_engine.classes import CLASSES
from tests.engine.test_unitmap_arrays import SPACE, synthetic_map


def attributes(tag: str) -> dict[str, str]:
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


def marks(html: str, svg_class: str, tag: str, cls: str) -> list[dict[str, str]]:
    """The ``<tag class="cls">`` marks inside the first ``<svg class="... svg_class ...">``."""
    start = re.search(rf'<svg class="[^"]*\b{svg_class}\b[^"]*"', html)
    assert start, svg_class
    body = html[start.start() : html.index("</svg>", start.start())]
    return [attributes(t) for t in re.findall(rf'<{tag} class="{cls}"[^>]*>', body)]


def per_class(found: list[dict[str, str]], key: str | None = None) -> dict[str, int]:
    out = dict.fromkeys(CLASSES, 0)
    for mark in found:
        out[mark["data-class"]] += int(mark[key]) if key else 1
    return out


def csv_of(html: str, name: str) -> list[dict[str, str]]:
    figure = html[html.index(f'data-figure="{name}"') :]
    link = re.search(r'data-format="csv" href="data:text/csv;base64,([^"]+)"', figure)
    assert link
    return list(csv.DictReader(io.StringIO(base64.b64decode(link.group(1)).decode())))


@pytest.fixture
def audit_dir(tmp_path):
    unit_map = synthetic_map(5)
    return unit_map, unit_map.save(tmp_path / "audit")


def test_report_draws_every_unit_of_the_map_in_its_class(audit_dir):
    unit_map, directory = audit_dir
    html, summary = build_report(directory), unit_map.summary()
    classes, layers = summary["classes"], summary["layers"]
    assert "<script" not in html
    assert per_class(marks(html, "unit-scatter", "path", "density"), "data-units") == {
        n: classes[n]["neurons"] for n in CLASSES
    }
    assert per_class(marks(html, "unit-scatter", "circle", "head")) == {n: classes[n]["heads"] for n in CLASSES}
    assert {m["data-cut"] for m in marks(html, "unit-scatter", "polyline", "cut")} == {"scu", "ucu", "ru"}
    cells = marks(html, "head-grid", "rect", "cell")
    assert len(cells) == SPACE.total_heads
    for index, layer in enumerate(layers):
        assert per_class([c for c in cells if int(c["data-layer"]) == index]) == layer["heads"]
    diff = html[html.index('data-mode="diff"') :]
    values = [float(v) for v in re.findall(r'<rect class="cell"[^>]*data-value="([^"]+)"', diff)]
    expected = (unit_map.z_safety - unit_map.z_utility)[: SPACE.total_heads].tolist()  # type: ignore[operator]
    assert values == pytest.approx(expected, abs=2e-4)
    bars = marks(html, "layer-counts", "rect", "count")
    assert len(bars) == 4 * len(layers)
    for bar in bars:
        assert int(bar["data-count"]) == layers[int(bar["data-layer"])][bar["data-part"]][bar["data-class"]]
    scu = [layer["neurons"]["SCU"] for layer in layers]
    zoomed = scu.index(max(scu))
    assert re.search(rf'<svg class="chart plane zoom" data-layer="{zoomed}"', html)
    assert per_class(marks(html, "zoom", "path", "points"), "data-units") == layers[zoomed]["neurons"]


def test_report_figures_link_their_data(audit_dir):
    unit_map, directory = audit_dir
    html, summary = build_report(directory), unit_map.summary()
    rows = csv_of(html, "unit-map-layer-counts")
    assert [[int(r[f"{c}_{p}"]) for c in CLASSES for p in ("heads", "neurons")] for r in rows] == [
        [layer[p][c] for c in CLASSES for p in ("heads", "neurons")] for layer in summary["layers"]
    ]
    binned = csv_of(html, "unit-map-scatter")
    for name in CLASSES:
        units = sum(int(r["units"]) for r in binned if r["class"] == name and r["part"] == "neurons")
        assert units == summary["classes"][name]["neurons"]
    link = re.search(
        r'data-figure="unit-map-head-labels">.*?data-format="svg" href="data:image/svg\+xml;base64,([^"]+)"', html
    )
    assert link and base64.b64decode(link.group(1)).decode().startswith('<svg class="chart head-grid"')


def test_summary_alone_and_a_utility_only_map(tmp_path, audit_dir):
    _, directory = audit_dir
    (directory / "unit_map.safetensors").unlink()
    assert "unit-scatter" not in build_report(directory) and "stacked" in build_report(directory)
    budget = synthetic_map(6, utility_only=True).save(tmp_path / "budget")
    html = build_report(budget)
    assert "unit-scatter" not in html and 'data-mode="diff"' not in html
    assert 'data-mode="label"' in html and "layer-counts" in html
