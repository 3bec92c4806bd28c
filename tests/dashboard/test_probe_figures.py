"""The probe page's distance per prefix length and its side-by-side panels, checked against the stored probes.

Browser part as tests/dashboard/test_browser.py; the two real (tiny) probes of test_probe_page.py are reused.
"""

from __future__ import annotations

import csv
import io

import pytest

from tests.dashboard.test_browser import (  # noqa: F401 (fixtures)
    browser,
    database_url,
    finished,
    page,
    screenshot,
    server,
)
from tests.dashboard.test_probe_page import data, probe_summaries  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def points(page, series: str) -> list[list[float]]:
    return page.eval_on_selector_all(
        f"#prefix-curves circle.point[data-series='{series}']",
        "cs => cs.map(c => [Number(c.dataset.x), Number(c.dataset.y)])",
    )


def test_distance_per_prefix_length_and_the_probes_side_by_side(page, server, data):  # noqa: F811
    first, second = data["probes"]
    summary, other = data["summaries"]
    page.goto(f"{server}/dashboard/#/probe/{first}?compare={second}")
    page.wait_for_selector("#prefix-curves svg.chart.points")
    ks = sorted(int(k) for k in summary["distances"]["refusal"])
    layer = summary["direction"]["layer"]
    for name, source in (("refusal", summary), ("compliance", summary), ("compare refusal", other)):
        kind = name.removeprefix("compare ")
        assert points(page, name) == [[k, source["distances"][kind][str(k)][layer]] for k in ks]
    last = summary["model"]["layers"] - 1
    page.select_option("#prefix-layer", str(last))
    page.wait_for_selector(f"#prefix-curves figure[data-figure=probe-prefix-layer-{last}]")
    assert points(page, "refusal") == [[k, summary["distances"]["refusal"][str(k)][last]] for k in ks]
    screenshot(page, "probe-compare")
    for kind in ("refusal", "compliance"):
        panels = page.locator(f".side-by-side[data-kind={kind}] svg.chart.curves")
        assert panels.count() == 2
        assert panels.nth(0).locator("polyline.curve").count() == len(ks)
        # one scale for both: the same top label
        assert (
            panels.nth(0).locator("text").nth(1).text_content() == panels.nth(1).locator("text").nth(1).text_content()
        )
    with page.expect_download() as download:
        page.click("figure[data-figure=probe-compared-refusal] button[data-format=csv]")
    rows = list(csv.DictReader(io.StringIO(open(download.value.path()).read())))
    assert [(r["k"], int(r["layer"]), float(r["distance"])) for r in rows] == [
        (k, layer, value) for k, values in other["distances"]["refusal"].items() for layer, value in enumerate(values)
    ]
