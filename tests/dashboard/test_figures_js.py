"""figures.js and results.js under Node (no browser): the Sankey's bands are the cross-tab's cells, the interval
bars the stored ends, and the ablation comparison reads what a real evaluation stores."""

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
SCRIPTS = ",".join(str(STATIC / name) for name in ("figures.js", "results.js"))


def run(function: str, *args) -> str:
    if NODE is None:
        pytest.skip("needs node to run figures.js")
    harness = [NODE, str(HERE / "figures_harness.js"), str(STATIC / "app.js"), SCRIPTS, function, json.dumps(args)]
    done = subprocess.run(harness, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


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


def test_the_ablation_comparison_reads_real_evaluations(tmp_path):
    """Dense, minus SCU and its random control evaluated for real on a tiny model, stored as the worker stores them."""
    from ssah_engine.audit import AuditConfig, run_audit
    from ssah_engine.data import load_dataset
    from ssah_engine.evaluation import DataRef, Protocol, evaluate
    from ssah_engine.evaluation.ablation_spec import AblationSpec
    from ssah_engine.loading import LoadOptions, load_model

    loaded = load_model("builtin:tiny-llama", LoadOptions(device="cpu"))
    safety = load_dataset("builtin:safety", require_response=True)
    utility = load_dataset("builtin:utility", require_response=True)
    unit_map = run_audit(loaded, safety, utility, AuditConfig(samples=4, max_length=256, batch_size=4))
    prompts, text = tmp_path / "harmful.txt", tmp_path / "benign.txt"
    prompts.write_text("Break the lock.\nTell me a secret.\nOpen the safe.\n")
    text.write_text("Rivers run to the sea and clouds bring rain.\n")
    protocol = Protocol(
        harmful=DataRef(str(prompts)),
        harmless=DataRef(str(prompts)),
        benign_text=DataRef(str(text)),
        instructions=None,
        zero_shot_tasks=(),
        max_new_tokens=3,
    )
    specs = [None, AblationSpec(("SCU",)), AblationSpec(("SCU",), control="random", seed=3)]
    scored = []
    for number, spec in enumerate(specs):
        result = evaluate(loaded, protocol, ablation=spec, unit_map=unit_map if spec else None)
        metrics = {key: value for key, value in result.items() if key != "records"}  # as worker/jobs.py stores it
        scored.append(
            {"evaluation": {"id": f"{number:08d}-eval"}, "score": {"metrics": json.loads(json.dumps(metrics))}}
        )
    entries = json.loads(run("ablationEntries", scored))
    assert [e["label"] for e in entries] == ["dense", "minus SCU", "random matched to SCU, seed 3"]
    for entry, item in zip(entries, scored):
        safety_metrics = item["score"]["metrics"]["safety"]
        assert entry["asr"] == safety_metrics["intervals"][safety_metrics["refusal_list"]]["asr"]
        assert entry["openings"] == safety_metrics["refusal_openings"]["harmful"]
        assert entry["format"] == protocol.prompt_format
    html = run("(s) => h('div', {}, ...ablationSection(s))", scored)
    assert html.count('class="chart intervals"') == 2  # ASR and refusal openings, one prompt format
    ends = [float(v) for v in re.findall(r'<g class="interval" [^>]*data-low="([^"]+)"', html)]
    stored = [
        v["ci95"][0]
        for item in scored
        for v in item["score"]["metrics"]["safety"]["intervals"][item["score"]["metrics"]["safety"]["refusal_list"]][
            "asr"
        ].values()
    ]
    assert ends[: len(stored)] == stored
