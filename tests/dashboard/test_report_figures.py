"""`ssah report` figures: the reproduce report's Table 1 as rates with intervals, role transfer as a flow, downloads."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import pytest

from ssah.cli import main
from ssah.report import build_report, detect_kind
from ssah.report.figures import interval_chart, interval_points, sankey
from ssah_engine.evaluation.intervals import rate_with_interval

CLASSES = ["SCU", "UCU", "CU", "RU"]
COUNTS = [[7, 1, 2, 0], [0, 9, 1, 0], [1, 0, 50, 3], [0, 0, 4, 11]]


def attributes(tag: str) -> dict[str, str]:
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


def tags(html: str, name: str, cls: str) -> list[dict[str, str]]:
    return [attributes(t) for t in re.findall(rf'<{name} class="{cls}"[^>]*>', html)]


def test_the_flow_has_one_band_per_cell_as_thick_as_its_count():
    svg = sankey(CLASSES, COUNTS)
    bands = tags(svg, "path", "flow")
    assert {(b["data-from"], b["data-to"]): int(b["data-count"]) for b in bands} == {
        (a, b): n for a, row in zip(CLASSES, COUNTS) for b, n in zip(CLASSES, row) if n
    }
    scale = float(attributes(re.search(r"<svg[^>]*>", svg).group(0))["data-scale"])
    for band in bands:
        thickness = float(band["data-thickness"])
        assert thickness == pytest.approx(max(1.0, int(band["data-count"]) * scale), abs=1e-3)
        ys = [float(v) for v in re.findall(r",(-?[\d.]+)", band["d"])]
        assert ys[4] - ys[3] == pytest.approx(thickness, abs=0.02)  # the band's right end
    nodes = tags(svg, "rect", "node")
    before = {n["data-class"]: (int(n["data-count"]), float(n["height"])) for n in nodes if n["data-side"] == "before"}
    assert {c: count for c, (count, _) in before.items()} == {c: sum(row) for c, row in zip(CLASSES, COUNTS)}
    for c, (_, height) in before.items():  # a node is as tall as the bands leaving it
        assert height == pytest.approx(sum(float(b["data-thickness"]) for b in bands if b["data-from"] == c), abs=0.02)
    assert max(float(n["y"]) + float(n["height"]) for n in nodes) <= 360  # everything fits


def test_a_one_percent_class_stays_visible_in_a_large_map():
    counts = [[1000, 0, 200, 0], [0, 5000, 0, 0], [100, 0, 110_000, 0], [0, 0, 0, 1000]]
    bands = tags(sankey(CLASSES, counts), "path", "flow")
    assert min(float(b["data-thickness"]) for b in bands) >= 1.0


def test_interval_bars_end_at_the_stored_interval():
    stored = {"system": rate_with_interval([True] * 3 + [False] * 29), "no_system": rate_with_interval([True] * 32)}
    svg = interval_chart([{"label": "minus SCU", "points": interval_points(stored)}], title="t")
    root = attributes(re.search(r"<svg[^>]*>", svg).group(0))
    left, width = float(root["data-left"]), float(root["data-plot-width"])
    groups = tags(svg, "g", "interval")
    bars = tags(svg, "line", "bar")
    assert [g["data-condition"] for g in groups] == ["system", "no_system"]
    for group, bar, (condition, entry) in zip(groups, bars, stored.items()):
        assert [float(group["data-low"]), float(group["data-high"])] == entry["ci95"]
        assert float(bar["x1"]) == pytest.approx(left + width * entry["ci95"][0])
        assert float(bar["x2"]) == pytest.approx(left + width * entry["ci95"][1])


def by_condition(system: int, no_system: int, n: int = 16) -> dict:
    return {
        c: rate_with_interval([True] * k + [False] * (n - k)) for c, k in (("system", system), ("no_system", no_system))
    }


def table1_row(prompt_format: str, compensation: str | None, arm: str, asr: tuple, openings: tuple, seeds=None) -> dict:
    row = {
        "prompt_format": prompt_format,
        "compensation": compensation,
        "arm": arm,
        "asr": sum(asr) / 32,
        "refusal_openings_harmful": sum(openings) / 32,
        "intervals": {
            "asr": by_condition(*asr),
            "refusal_openings_harmful": by_condition(*openings),
            "over_refusal": {},
        },
        "seeds": seeds,
    }
    if seeds:
        row["asr_range"] = [0.1, 0.2]
    return row


@pytest.fixture
def reproduce_dir(tmp_path: Path) -> Path:
    table1 = [
        table1_row("chat", None, "dense", (1, 2), (14, 13)),
        table1_row("chat", "none", "minus SCU", (15, 16), (0, 1)),
        table1_row("chat", "none", "random matched to SCU", (2, 3), (12, 12), seeds=[0, 1, 2]),
        table1_row("chat", "safety", "minus SCU", (12, 14), (2, 3)),
        table1_row("no_inst", None, "dense", (4, 4), (10, 9)),
        table1_row("no_inst", "none", "minus SCU", (16, 16), (0, 0)),
    ]
    transfer = {"classes": CLASSES, "counts": COUNTS, "unchanged_fraction": 0.873}
    results = {
        "plan": {"model": "builtin:tiny-llama", "preset": "quick"},
        "plan_hash": "f" * 64,
        "protocol": {"hash": "a" * 64},
        "stages": {"baseline": {"seconds": 1.0, "reused": False}},
        "ablation": {"table1": table1},
        "downstream": {"full": {"role_transfer": transfer}, "freeze_i": {"role_transfer": transfer}},
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "results.md").write_text("# ssah reproduce\n")
    return tmp_path


def test_the_reproduce_report_draws_table1_with_its_intervals(reproduce_dir: Path):
    assert detect_kind(reproduce_dir) == "reproduce"
    html = build_report(reproduce_dir)
    table1 = json.loads((reproduce_dir / "results.json").read_text())["ablation"]["table1"]
    names = re.findall(r'<figure class="figure" data-figure="([^"]+)"', html)
    assert names == [
        "ablation-asr-chat-none",
        "ablation-refusal_openings_harmful-chat-none",
        "ablation-asr-chat-safety",
        "ablation-refusal_openings_harmful-chat-safety",
        "ablation-asr-no_inst-none",
        "ablation-refusal_openings_harmful-no_inst-none",
        "role-transfer-full",
        "role-transfer-freeze_i",
    ]
    first = html.split('data-figure="ablation-asr-chat-none"')[1].split("</figure>")[0]
    rows = re.findall(r'<g class="interval-row" data-label="([^"]+)">(.*?)</g></g>', first + "</g>")
    assert [label for label, _ in rows] == ["dense", "minus SCU", "random matched to SCU (seeds 0, 1, 2)"]
    for (_, drawn), row in zip(rows, table1[:3]):
        ends = [[float(g["data-low"]), float(g["data-high"])] for g in tags(drawn, "g", "interval")]
        assert ends == [v["ci95"] for v in row["intervals"]["asr"].values()]
    band = tags(first, "rect", "range")
    assert [[float(b["data-low"]), float(b["data-high"])] for b in band] == [[0.1, 0.2]]  # the control's seeds
    assert "results.md" in html


def download(html: str, name: str, ext: str) -> str:
    chunk = html.split(f'data-figure="{name}"')[1].split("</figure>")[0]
    href = re.search(
        rf'download="{re.escape(name)}\.{ext}" data-format="{ext}" href="data:[^;]+;base64,([^"]+)"', chunk
    )
    return base64.b64decode(href.group(1)).decode()


def test_each_report_figure_downloads_its_svg_and_data(reproduce_dir: Path):
    html = build_report(reproduce_dir)
    rows = list(csv.DictReader(io.StringIO(download(html, "role-transfer-full", "csv"))))
    assert [[r["before"], r["after"], int(r["units"])] for r in rows] == [
        [a, b, n] for a, row in zip(CLASSES, COUNTS) for b, n in zip(CLASSES, row)
    ]
    markup = download(html, "role-transfer-full", "svg")
    assert markup.startswith('<svg class="chart sankey"') and markup.count('class="flow"') == sum(
        1 for row in COUNTS for n in row if n
    )
    table = list(csv.DictReader(io.StringIO(download(html, "ablation-asr-chat-none", "csv"))))
    control = [r for r in table if r["arm"] == "random matched to SCU"]
    assert [(r["seeds"], r["range_low"], r["range_high"]) for r in control] == [("0 1 2", "0.1", "0.2")] * 2


def test_the_finetune_report_draws_role_transfer_as_a_flow(tmp_path: Path):
    (tmp_path / "loss.json").write_text(json.dumps([{"step": 1, "loss": 2.0}]))
    (tmp_path / "role_transfer.json").write_text(
        json.dumps({"classes": CLASSES, "counts": COUNTS, "unchanged_fraction": 0.9})
    )
    html = build_report(tmp_path)
    assert 'class="heatmap"' in html
    assert len(tags(html, "path", "flow")) == sum(1 for row in COUNTS for n in row if n)


def test_ssah_report_detects_a_reproduce_directory(reproduce_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(reproduce_dir), "--out", str(out)]) == 0
    assert 'data-kind="reproduce"' in out.read_text()
