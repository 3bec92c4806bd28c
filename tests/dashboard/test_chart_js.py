"""The dashboard's loss chart draws the tracked refusal margins (app.js run in Node under a minimal DOM)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
APP = HERE.parents[1] / "service" / "dashboard" / "static" / "app.js"
NODE = shutil.which("node")


def chart(steps: list[dict], baseline: dict | None) -> str:
    if NODE is None:
        pytest.skip("needs node to run app.js")
    return subprocess.run(
        [NODE, str(HERE / "chart_harness.js"), str(APP), json.dumps([steps, baseline])],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def test_the_loss_chart_draws_the_refusal_and_over_refusal_margins():
    steps = [{"step": s, "loss": 3 - 0.2 * s, "lr": 1e-4} for s in range(1, 11)]
    for row in steps[1::2]:
        row.update(refusal_margin=2.0 - 0.3 * row["step"], over_refusal_margin=-3.0)
    html = chart(steps, {"step": 0, "refusal_margin": 2.5, "over_refusal_margin": -3.0})
    assert 'class="chart line" data-points="10"' in html
    refusal = re.search(
        r'<polyline class="series refusal-margin" data-series="refusal-margin" data-points="(\d+)"'
        r'[^>]* points="([^"]+)"',
        html,
    )
    assert refusal and refusal.group(1) == "6"  # step 0 and the five tracked steps
    ys = [float(point.split(",")[1]) for point in refusal.group(2).split()]
    assert ys == sorted(ys)  # falling margin: SVG y grows downwards
    assert 'data-series="over-refusal-margin" data-points="6"' in html


def test_without_tracking_the_chart_is_the_loss_alone():
    html = chart([{"step": s, "loss": 1.0 / s} for s in range(1, 4)], None)
    assert 'data-points="3"' in html and "series" not in html
