"""Report sections of an `ssah reproduce` directory (results.json): Table 1 as rates with their intervals per
prompt format and compensation, and each downstream fine-tune's role transfer as a flow."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from .figures import figure, interval_chart, interval_points, transfer_figure

# (key in a table1 row's intervals, its seeds' range key, title)
METRICS = (
    ("asr", "asr_range", "ASR (keyword list), harmful prompts"),
    ("refusal_openings_harmful", "refusal_openings_harmful_range", "responses opening with a refusal, harmful prompts"),
)


def is_reproduce(directory: Path) -> bool:
    """Whether ``directory`` is an `ssah reproduce` output: a results.json with its plan and stages."""
    path = directory / "results.json"
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return False
    return isinstance(data, dict) and "plan" in data and "stages" in data


def _label(row: dict) -> str:
    seeds = row.get("seeds")
    return row["arm"] + (f" (seeds {', '.join(map(str, seeds))})" if seeds else "")


def ablation_figures(table1: list[dict]) -> str:
    """One figure per metric, prompt format and compensation: dense first, then each arm with its intervals.

    A random control's dots and bars are its first seed's (the interval of one evaluation); the grey band is
    the range of its seeds' means, as Table 1 prints it.
    """
    out = []
    formats = list(dict.fromkeys(row["prompt_format"] for row in table1))
    for prompt_format in formats:
        rows = [row for row in table1 if row["prompt_format"] == prompt_format]
        dense = [row for row in rows if row["compensation"] is None]
        for compensation in dict.fromkeys(row["compensation"] for row in rows if row["compensation"] is not None):
            panel = dense + [row for row in rows if row["compensation"] == compensation]
            for key, range_key, title in METRICS:
                chart_rows = [
                    {
                        "label": _label(row),
                        "points": interval_points(row["intervals"].get(key)),
                        "range": row.get(range_key),
                    }
                    for row in panel
                ]
                chart_rows = [row for row in chart_rows if row["points"]]
                if not chart_rows:
                    continue
                data: list[list[Any]] = [
                    ["prompt_format", "compensation", "arm", "seeds", "metric", "condition", "rate", "ci95_low",
                     "ci95_high", "k", "n", "mean_over_seeds", "range_low", "range_high"]
                ]  # fmt: skip
                for row in panel:
                    spread = row.get(range_key) or ["", ""]
                    for point in interval_points(row["intervals"].get(key)):
                        data.append(
                            [prompt_format, row["compensation"] or "", row["arm"], " ".join(map(str, row.get("seeds") or [])),
                             key, point["condition"], point["rate"], *point["ci95"], point["k"], point["n"],
                             row.get(key, ""), *spread]
                        )  # fmt: skip
                name = f"ablation-{key}-{prompt_format}-{compensation}"
                title_text = f"{title} · format {prompt_format} · compensation {compensation}"
                out.append(figure(interval_chart(chart_rows, title=title_text), name, data))
    return "".join(out)


def reproduce_sections(directory: Path) -> tuple[str, str]:
    results = json.loads((directory / "results.json").read_text())
    plan = results.get("plan", {})
    body = [
        f"<p>Model <code>{escape(str(plan.get('model', '?')))}</code>, preset "
        f"<code>{escape(str(plan.get('preset', '?')))}</code>; plan <code>{escape(str(results.get('plan_hash', '?'))[:16])}</code>, "
        f"protocol <code class='protocol-hash'>{escape(str(results.get('protocol', {}).get('hash', '?'))[:16])}</code>.</p>"
    ]
    table1 = results.get("ablation", {}).get("table1", [])
    if table1:
        body += [
            "<h2>Ablation comparison (Table 1)</h2>",
            "<p>Each dot a condition's rate, its bar the Wilson 95 % interval over the prompts; grey band: a random "
            "control's range over seeds (its dots are the first seed's).</p>",
            ablation_figures(table1),
        ]
    downstream = {
        arm: entry
        for arm, entry in results.get("downstream", {}).items()
        if entry.get("role_transfer", {}).get("counts")
    }
    if downstream:
        body.append("<h2>Role transfer during downstream fine-tuning (before → after)</h2>")
        for arm, entry in downstream.items():
            transfer = entry["role_transfer"]
            body += [
                f"<h3>{escape(arm)}: {100 * transfer.get('unchanged_fraction', 0):.2f} % of units kept their class</h3>",
                transfer_figure(transfer, f"role-transfer-{arm}"),
            ]
    if (directory / "results.md").is_file():
        body.append(
            f"<details><summary>results.md</summary><pre>{escape((directory / 'results.md').read_text())}</pre></details>"
        )
    return f"Reproduction of {plan.get('model', directory.name)}", "".join(body)
