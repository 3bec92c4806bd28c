"""Self-contained HTML reports of an audit, evaluation or fine-tune directory.

Presentation only: the report reads the JSON files a run wrote (no torch), and writes one HTML
file with inline CSS and inline SVG, readable offline and attachable to a review.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from .figures import transfer_figure
from .probe import probe_sections
from .reproduce import is_reproduce, reproduce_sections
from .svg import CLASSES, heatmap_table, legend, line_chart, stacked_bars
from .unitmap import unit_map_sections

KINDS = ("audit", "evaluation", "finetune", "probe", "reproduce")

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:960px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f5f5f5}td.text{text-align:left;max-width:28rem;white-space:pre-wrap}
.muted{color:#777}.legend .key{margin-right:1rem}.legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem}
.axis{font-size:10px;fill:#555}code{background:#f5f5f5;padding:0 .2rem}summary{cursor:pointer}
td.heat small{color:#333}figure{margin:.5rem 0 1rem}figcaption{font-size:12px;color:#555}
"""


def detect_kind(directory: Path) -> str:
    """Which run wrote ``directory``: reproduce (results.json), fine-tune (loss.json), audit (summary.json), ..."""
    if is_reproduce(directory):
        return "reproduce"
    if (directory / "loss.json").is_file() or (directory / "finetune_config.json").is_file():
        return "finetune"
    if (directory / "summary.json").is_file():
        return "audit"
    if (directory / "probe.json").is_file():
        return "probe"
    if (directory / "evaluation.json").is_file():
        return "evaluation"
    raise FileNotFoundError(
        f"{directory} holds no summary.json (audit), evaluation.json (evaluation) or loss.json (fine-tune)"
    )


def _read(path: Path):
    return json.loads(path.read_text())


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def _flatten(value, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict, keyed by dotted path (metrics tables)."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = value
    return out


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def class_table(summary: dict) -> str:
    """The class summary: units, heads, neurons and fractions per class."""
    rows = [
        [
            name,
            entry.get("units", entry.get("heads", 0) + entry.get("neurons", 0)),
            entry.get("heads", ""),
            entry.get("neurons", ""),
            f"{100 * entry['unit_fraction']:.2f} %",
            f"{100 * entry['param_fraction']:.2f} %",
        ]
        for name, entry in summary["classes"].items()
    ]
    return _table(["class", "units", "heads", "neurons", "% of units", "% of parameters"], rows, "classes")


def audit_sections(directory: Path) -> tuple[str, str]:
    summary = _read(directory / "summary.json")
    model = summary.get("model") or {}
    units = summary.get("units", {})
    layers = summary.get("layers", [])
    body = [
        (
            f"<p>Model <code>{escape(str(model.get('source', model)))}</code>; "
            f"{units.get('heads', '?')} heads, {units.get('neurons', '?')} neurons in {len(layers)} layers; "
            f"method <code>{escape(str(summary.get('config', {}).get('method', '?')))}</code>.</p>"
        ),
        "<h2>Classes</h2>",
        class_table(summary),
        "<h2>Attention heads per layer</h2>",
        legend(),
        stacked_bars(layers, "heads"),
        "<h2>MLP neurons per layer</h2>",
        legend(),
        stacked_bars(layers, "neurons"),
        *unit_map_sections(directory),  # when the audit's unit_map.safetensors is there
    ]
    if summary.get("config"):
        body += ["<h2>Configuration</h2>", f"<pre>{escape(json.dumps(summary['config'], indent=2))}</pre>"]
    return f"Audit of {model.get('source', directory.name)}", "".join(body)


def metrics_table(evaluation: dict) -> str:
    """Safety and utility numbers of one evaluation, one row per metric."""
    rows = [
        [f"{part}.{key}", value]
        for part in ("safety", "utility")
        for key, value in _flatten(evaluation.get(part, {})).items()
    ]
    return _table(["metric", "value"], rows, "metrics")


def records_section(records: dict) -> str:
    """Per-prompt records, one collapsible table per set."""
    out = []
    for name, items in records.items():
        rows = "".join(
            "<tr>" + f"<td>{_fmt(item.get('index', ''))}</td><td>{_fmt(item.get('condition', ''))}</td>"
            f"<td class='text'>{escape(str(item.get('prompt', '')))}</td>"
            f"<td class='text'>{escape(str(item.get('response', '')))}</td>"
            f"<td>{_fmt(item.get('margin', ''))}</td>"
            f"<td class='text'>{escape(', '.join(f'{k}: {v}' for k, v in (item.get('verdicts') or {}).items()))}</td></tr>"
            for item in items
        )
        out.append(
            f"<details><summary>{escape(name)}: {len(items)} records</summary><table class='records'>"
            "<thead><tr><th>#</th><th>condition</th><th>prompt</th><th>response</th><th>margin</th>"
            f"<th>verdicts</th></tr></thead><tbody>{rows}</tbody></table></details>"
        )
    return "".join(out)


def evaluation_sections(directory: Path) -> tuple[str, str]:
    evaluation = _read(directory / "evaluation.json")
    protocol = evaluation.get("protocol") or {}
    model = evaluation.get("model") or {}
    body = [
        (
            f"<p>Model <code>{escape(str(model.get('source', '?')))}</code>; protocol "
            f"<code>{escape(str(protocol.get('version', '?')))}</code>, hash "
            f"<code class='protocol-hash'>{escape(str(protocol.get('hash', '?')))}</code>.</p>"
        ),
        "<h2>Scores</h2>",
        metrics_table(evaluation),
    ]
    if evaluation.get("records"):
        body += ["<h2>Per-prompt records</h2>", records_section(evaluation["records"])]
    return f"Evaluation of {model.get('source', directory.name)}", "".join(body)


def before_after_table(evaluation: dict) -> str:
    """Each metric before and after the fine-tune, with the change."""
    before = {
        f"{p}.{k}": v
        for p in ("safety", "utility")
        for k, v in _flatten(evaluation.get("before", {}).get(p, {})).items()
    }
    after = {
        f"{p}.{k}": v
        for p in ("safety", "utility")
        for k, v in _flatten(evaluation.get("after", {}).get(p, {})).items()
    }
    rows = [
        [
            key,
            before.get(key, ""),
            after.get(key, ""),
            after[key] - before[key] if key in before and key in after else "",
        ]
        for key in list(before) + [key for key in after if key not in before]
    ]
    return _table(["metric", "before", "after", "change"], rows, "before-after")


# Tracked margins drawn over the loss: (key in loss.json, name, colour).
MARGIN_SERIES = (
    ("refusal_margin", "refusal-margin", "#d62728"),
    ("over_refusal_margin", "over-refusal-margin", "#2ca02c"),
)


def refusal_series(history: list[dict], baseline: dict | None) -> tuple:
    """The tracked margins of a loss curve as chart series, the step-0 measurement first."""
    series = []
    for key, name, colour in MARGIN_SERIES:
        line = [(0, baseline[key])] if baseline and key in baseline else []
        line += [(row["step"], row[key]) for row in history if row.get(key) is not None]
        if line:
            series.append((name, line, colour))
    return tuple(series)


def finetune_sections(directory: Path) -> tuple[str, str]:
    body = []
    config = _read(directory / "finetune_config.json") if (directory / "finetune_config.json").is_file() else {}
    model = config.get("model") or {}
    if config:
        masks = config.get("masks", {})
        body.append(
            f"<p>Model <code>{escape(str(model.get('source', '?')))}</code>; "
            f"{config.get('steps', '?')} steps; trainable "
            f"{100 * masks.get('trainable_fraction', 0):.2f} % of parameters.</p>"
        )
    if (directory / "loss.json").is_file():
        history = _read(directory / "loss.json")
        points = [(row["step"], row["loss"]) for row in history if row.get("loss") is not None]
        track = _read(directory / "refusal_track.json") if (directory / "refusal_track.json").is_file() else {}
        series = refusal_series(history, track.get("baseline"))
        title = "Training loss and refusal margins" if series else "Training loss"
        body += [f"<h2>{title}</h2>", line_chart(points, series=series)]
        if track.get("stop"):
            stop = track["stop"]
            body.append(
                f"<p>Stopped at step {stop['step']}: refusal margin {stop['refusal_margin']:.3f} "
                f"below {stop['threshold']:.3f}.</p>"
            )
    if (directory / "evaluation.json").is_file():
        evaluation = _read(directory / "evaluation.json")
        body += ["<h2>Scores before and after</h2>", before_after_table(evaluation)]
    if (directory / "role_transfer.json").is_file():
        transfer = _read(directory / "role_transfer.json")
        body += [
            "<h2>Role transfer (before → after)</h2>",
            heatmap_table(transfer.get("classes", list(CLASSES)), transfer["counts"], transfer.get("row_fractions")),
            transfer_figure(transfer, "role-transfer"),
            f"<p>{100 * transfer.get('unchanged_fraction', 0):.2f} % of units kept their class.</p>",
        ]
    return f"Fine-tune of {model.get('source', directory.name)}", "".join(body)


SECTIONS = {
    "audit": audit_sections,
    "evaluation": evaluation_sections,
    "finetune": finetune_sections,
    "probe": probe_sections,
    "reproduce": reproduce_sections,
}


def build_report(directory: str | Path, kind: str | None = None) -> str:
    """The HTML report of a run directory; ``kind`` defaults to what the files say."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    kind = kind or detect_kind(directory)
    title, body = SECTIONS[kind](directory)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<style>{CSS}</style></head><body data-kind="{kind}"><h1>{escape(title)}</h1>'
        f'<p class="muted">{escape(str(directory))} · generated {stamp} by ssah report</p>{body}</body></html>\n'
    )
