"""`ssah report`: HTML reports built from small synthetic run directories."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ssah.cli import main
from ssah.report import build_report, detect_kind

CLASSES = ("SCU", "UCU", "CU", "RU")


def summary(layers: int = 3) -> dict:
    per_layer = [
        {
            "layer": i,
            "heads": {"SCU": i, "UCU": 1, "CU": 2, "RU": 0},
            "neurons": {"SCU": 10 + i, "UCU": 20, "CU": 300 + 7 * i, "RU": 5},
        }
        for i in range(layers)
    ]
    classes = {}
    for name in CLASSES:
        heads = sum(layer["heads"][name] for layer in per_layer)
        neurons = sum(layer["neurons"][name] for layer in per_layer)
        classes[name] = {
            "units": heads + neurons,
            "heads": heads,
            "neurons": neurons,
            "unit_fraction": 0.25,
            "param_fraction": 0.125,
        }
    return {
        "format_version": 1,
        "classes": classes,
        "layers": per_layer,
        "units": {"total": 999, "heads": 12, "neurons": 987},
        "config": {"method": "wifv"},
        "model": {"source": "builtin:tiny-llama"},
    }


def evaluation(asr: float) -> dict:
    return {
        "protocol": {"hash": "ab12cd34" * 8, "version": "ssah-eval/1"},
        "model": {"source": "builtin:tiny-llama"},
        "safety": {"asr": asr, "over_refusal": 0.0625, "refusal_margin": {"mean": -1.5}},
        "utility": {"perplexity": 17.25, "zero_shot": {"status": "unavailable"}},
        "records": {
            "harmful": [
                {
                    "index": 0,
                    "condition": "system",
                    "prompt": "How to <pick> a lock?",
                    "response": "I can't help",
                    "margin": 0.5,
                    "verdicts": {"ssah-31": "refusal"},
                }
            ]
        },
    }


def write(directory: Path, files: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        (directory / name).write_text(json.dumps(value))
    return directory


def bars(html: str, part: str) -> list[str]:
    svg = re.search(rf'<svg class="chart stacked" data-part="{part}".*?</svg>', html, re.DOTALL).group(0)
    return re.findall(r'<g class="bar"[^>]*>', svg)


def test_audit_report_shows_the_summary_and_one_bar_per_layer(tmp_path):
    data = summary(layers=5)
    html = build_report(write(tmp_path / "audit", {"summary.json": data}))
    assert 'data-kind="audit"' in html
    for name, entry in data["classes"].items():
        row = re.search(rf"<tr><td>{name}</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>", html)
        assert row.groups() == (str(entry["units"]), str(entry["heads"]), str(entry["neurons"]))
    for part in ("heads", "neurons"):
        found = bars(html, part)
        assert len(found) == 5
        # The picture's numbers are the summary's numbers, layer by layer.
        for layer, tag in zip(data["layers"], found):
            for name in CLASSES:
                assert f'data-{name.lower()}="{layer[part][name]}"' in tag
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_evaluation_report_shows_scores_protocol_and_escaped_records(tmp_path):
    html = build_report(write(tmp_path / "eval", {"evaluation.json": evaluation(0.375)}))
    assert 'data-kind="evaluation"' in html
    assert "ab12cd34" * 8 in html
    assert "<td>safety.asr</td><td>0.375</td>" in html
    assert "<td>utility.perplexity</td><td>17.25</td>" in html
    assert "<details><summary>harmful: 1 records</summary>" in html
    assert "How to &lt;pick&gt; a lock?" in html


def test_finetune_report_has_loss_curve_scores_and_transfer_heatmap(tmp_path):
    loss = [{"step": step, "loss": 3.0 - 0.1 * step, "lr": 1e-4} for step in range(1, 11)]
    transfer = {
        "classes": list(CLASSES),
        "counts": [[7, 1, 2, 0], [0, 9, 1, 0], [1, 0, 50, 3], [0, 0, 4, 11]],
        "unchanged_fraction": 0.873,
    }
    directory = write(
        tmp_path / "ft",
        {
            "loss.json": loss,
            "role_transfer.json": transfer,
            "evaluation.json": {"protocol": None, "before": evaluation(0.25), "after": evaluation(0.5)},
        },
    )
    assert detect_kind(directory) == "finetune"
    html = build_report(directory)
    assert 'data-points="10"' in html
    assert "<td>safety.asr</td><td>0.25</td><td>0.5</td><td>0.25</td>" in html
    cells = re.findall(r'<td class="heat" data-count="(\d+)"', html)
    assert [int(c) for c in cells] == [cell for row in transfer["counts"] for cell in row]
    assert "87.30 % of units kept their class" in html


def test_cli_writes_the_report_and_rejects_unknown_directories(tmp_path, capsys):
    directory = write(tmp_path / "audit", {"summary.json": summary()})
    out = tmp_path / "out" / "report.html"
    assert main(["report", str(directory), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!doctype html>")
    assert main(["report", str(write(tmp_path / "empty", {})), "--out", str(out)]) == 2
    assert "holds no summary.json" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["summary.json", "evaluation.json", "loss.json"])
def test_kind_detection(tmp_path, name):
    expected = {"summary.json": "audit", "evaluation.json": "evaluation", "loss.json": "finetune"}[name]
    assert detect_kind(write(tmp_path, {name: {}})) == expected


def test_finetune_report_draws_the_tracked_refusal_margins_over_the_loss(tmp_path):
    loss = [{"step": step, "loss": 3.0 - 0.1 * step, "lr": 1e-4} for step in range(1, 11)]
    for row in loss[1::2]:  # tracked every 2 steps
        row.update(refusal_margin=2.0 - 0.3 * row["step"], over_refusal_margin=-3.0 + 0.01 * row["step"])
    track = {
        "baseline": {"step": 0, "refusal_margin": 2.5, "over_refusal_margin": -3.0},
        "stop": {"reason": "refusal_margin_below", "step": 10, "refusal_margin": -1.0, "threshold": -0.5},
    }
    html = build_report(write(tmp_path / "ft", {"loss.json": loss, "refusal_track.json": track}))
    refusal = re.search(
        r'<polyline class="series refusal-margin" data-series="refusal-margin" '
        r'data-points="(\d+)"[^>]* points="([^"]+)"',
        html,
    )
    assert refusal and refusal.group(1) == "6"  # step 0 and five tracked steps
    ys = [float(point.split(",")[1]) for point in refusal.group(2).split()]
    assert ys == sorted(ys)  # the margin falls step by step: SVG y grows downwards
    assert 'data-series="over-refusal-margin" data-points="6"' in html
    assert "Stopped at step 10: refusal margin -1.000 below -0.500." in html
    assert "series" not in build_report(write(tmp_path / "plain", {"loss.json": loss[:1]}))
