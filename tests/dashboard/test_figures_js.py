"""figures.js under Node (no browser): the Sankey's bands are the cross-tab's cells, the interval bars the stored ends."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
STATIC = HERE.parents[1] / "service" / "dashboard" / "static"
NODE = shutil.which("node")
CLASSES = ["SCU", "UCU", "CU", "RU"]


def run(function: str, *args) -> str:
    if NODE is None:
        pytest.skip("needs node to run figures.js")
    return subprocess.run(
        [
            NODE,
            str(HERE / "figures_harness.js"),
            str(STATIC / "app.js"),
            str(STATIC / "figures.js"),
            function,
            json.dumps(args),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def attributes(tag: str) -> dict[str, str]:
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


def test_sankey_bands_are_the_cells_and_sum_to_the_row_and_column_totals():
    counts = [[1000, 0, 200, 5], [0, 5000, 30, 0], [100, 0, 110_000, 40], [0, 0, 60, 1000]]
    html = run("sankey", {"classes": CLASSES, "counts": counts})
    bands = [attributes(t) for t in re.findall(r"<path[^>]*>", html)]
    assert {(b["data-from"], b["data-to"]): int(b["data-count"]) for b in bands} == {
        (a, b): n for a, row in zip(CLASSES, counts) for b, n in zip(CLASSES, row) if n
    }
    scale = float(attributes(re.search(r"<svg[^>]*>", html).group(0))["data-scale"])
    for band in bands:
        assert float(band["data-thickness"]) == pytest.approx(max(1.0, int(band["data-count"]) * scale), abs=1e-3)
    nodes = [attributes(t) for t in re.findall(r'<rect class="node"[^>]*>', html)]
    for node in nodes:
        side = "data-from" if node["data-side"] == "before" else "data-to"
        assert int(node["data-count"]) == sum(int(b["data-count"]) for b in bands if b[side] == node["data-class"])
        assert float(node["height"]) == pytest.approx(
            sum(float(b["data-thickness"]) for b in bands if b[side] == node["data-class"]), abs=0.01
        )
    assert max(float(n["y"]) + float(n["height"]) for n in nodes) <= 360


def test_interval_chart_bars_span_the_interval_on_the_axis():
    rows = [{"label": "dense", "points": [{"condition": "system", "rate": 0.25, "ci95": [0.1, 0.45], "k": 8, "n": 32}]}]
    html = run("intervalChart", rows, {"title": "ASR"})
    root = attributes(re.search(r"<svg[^>]*>", html).group(0))
    left, width = float(root["data-left"]), float(root["data-plot-width"])
    bar = attributes(re.search(r'<line class="bar"[^>]*>', html).group(0))
    dot = attributes(re.search(r'<circle class="rate"[^>]*>', html).group(0))
    assert [float(bar["x1"]), float(bar["x2"]), float(dot["cx"])] == pytest.approx(
        [left + width * 0.1, left + width * 0.45, left + width * 0.25]
    )
