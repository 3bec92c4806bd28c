"""The probe page's charts (probe.js, run in Node under a minimal DOM) on a real tiny probe."""

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


@pytest.fixture(scope="module")
def summaries() -> list[dict]:
    from ssah_engine.audit import AuditConfig, run_audit
    from ssah_engine.data import load_dataset
    from ssah_engine.loading import LoadOptions, load_model
    from ssah_engine.probe import ProbeConfig, run_probe

    safety = load_dataset("builtin:safety", require_response=True)
    utility = load_dataset("builtin:utility", require_response=True)
    out = []
    for source in ("builtin:tiny-llama", "builtin:tiny-qwen2"):
        loaded = load_model(source, LoadOptions(device="cpu"))
        unit_map = run_audit(loaded, safety, utility, AuditConfig(samples=4, max_length=256, batch_size=4))
        out.append(
            run_probe(
                loaded, safety, utility, ProbeConfig(ks=(2, 4, 6), queries=4, calibration=8), unit_map=unit_map
            ).data
        )
    return out


def draw(summary: dict, other: dict | None) -> str:
    if NODE is None:
        pytest.skip("needs node to run probe.js")
    return subprocess.run(
        [
            NODE,
            str(HERE / "probe_harness.js"),
            str(STATIC / "app.js"),
            str(STATIC / "probe.js"),
            json.dumps([summary, other]),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def test_one_curve_per_k_over_every_layer_and_histograms_per_class(summaries):
    summary = summaries[0]
    html = draw(summary, None)
    refusal = html.split("\n")[0]
    assert 'data-label="refusal" data-curves="3"' in refusal
    for k in ("2", "4", "6"):
        found = re.search(rf'data-name="k={k}" data-points="(\d+)"[^>]* points="([^"]+)"', refusal)
        assert found and int(found.group(1)) == summary["model"]["layers"]
        # The highest distance of the curve sits at the chart's top (y = 18): the values are drawn, not a stub.
        ys = [float(p.split(",")[1]) for p in found.group(2).split()]
        top = max(max(v) for v in summary["distances"]["refusal"].values())
        assert (min(ys) == pytest.approx(18.0, abs=0.1)) == (max(summary["distances"]["refusal"][k]) == top)
    units = re.findall(r'class="chart histogram" data-class="(\w+)" data-units="(\d+)"', html)
    assert units == [(c, str(summary["unit_writes"]["classes"][c]["units"])) for c in ("SCU", "UCU", "CU", "RU")]
    assert html.count('class="control"') == len(summary["unit_writes"]["random"])


def test_a_compared_probe_adds_dashed_curves(summaries):
    html = draw(summaries[0], summaries[1]).split("\n")
    assert 'data-curves="6"' in html[0] and 'data-curves="6"' in html[1]
    assert html[0].count('stroke-dasharray="4 3"') == 3
