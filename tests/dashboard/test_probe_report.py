"""`ssah report` of a `ssah probe` directory: one curve per k (and per compared k), unit writes by class."""

from __future__ import annotations

import json
import re

from ssah.cli import main
from tests.engine.conftest import write_jsonl


def test_probe_report_draws_every_k_for_both_models(tmp_path):
    harmful = write_jsonl(
        tmp_path / "h.jsonl",
        [{"prompt": f"how to do bad thing {i}", "response": f"Sorry, I can't help with thing {i}."} for i in range(8)],
    )
    harmless = write_jsonl(tmp_path / "ok.jsonl", [{"prompt": f"how to bake cake {i}"} for i in range(8)])
    out = tmp_path / "probe"
    assert (
        main(
            [
                "probe",
                "--model",
                "builtin:tiny-llama",
                "--compare",
                "builtin:tiny-qwen2",
                "--harmful",
                harmful,
                "--harmless",
                harmless,
                "--ks",
                "2,4,6",
                "--queries",
                "3",
                "--calibration",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    data = json.loads((out / "probe.json").read_text())
    assert 'data-kind="probe"' in html
    refusal = html.split('data-label="query + k refusal tokens"')[1].split("</svg>")[0]
    assert re.findall(r'data-name="(k=\d+|compare k=\d+)"', refusal) == [
        "k=2",
        "k=4",
        "k=6",
        "compare k=2",
        "compare k=4",
        "compare k=6",
    ]
    layers = data["model"]["model"]["layers"]
    assert all(n == str(layers) for n in re.findall(r'data-points="(\d+)"', refusal))
    assert f"Refusal direction at layer {data['model']['direction']['layer']}" in html
    # A single model's directory (its probe.json holds the distances directly) reports too.
    assert main(["report", str(out / "model"), "--out", str(tmp_path / "m.html")]) == 0
    assert "compare k=2" not in (tmp_path / "m.html").read_text()


def test_probe_report_draws_distance_per_prefix_length_at_the_direction_layer(tmp_path):
    from ssah.report.probe import prefix_curves

    distances = {
        kind: {str(k): [0.1 * k + 0.01 * layer + shift for layer in range(3)] for k in (2, 4, 8)}
        for kind, shift in (("refusal", 0.0), ("compliance", 0.5))
    }
    other = {
        "distances": {kind: {k: [v / 2 for v in values] for k, values in d.items()} for kind, d in distances.items()}
    }
    html = prefix_curves({"distances": distances}, other, 1)
    drawn = re.findall(r'<circle class="point" data-series="([^"]+)" data-x="([^"]+)" data-y="([^"]+)"', html)
    expected = [
        (name, str(k), str(source["distances"][kind][str(k)][1]))
        for name, source, kind in (
            ("refusal", {"distances": distances}, "refusal"),
            ("compliance", {"distances": distances}, "compliance"),
            ("compare refusal", other, "refusal"),
            ("compare compliance", other, "compliance"),
        )
        for k in (2, 4, 8)
    ]
    assert drawn == expected
    assert 'data-figure="probe-prefix-layer-1"' in html and 'data-format="csv"' in html
