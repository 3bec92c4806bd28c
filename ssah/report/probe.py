"""Report sections of a `ssah probe` directory: distance curves per k, the gap, unit writes by class."""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path

from .figures import figure, points_chart
from .svg import CLASSES, COLORS

K_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def layer_curves(
    curves: list[tuple[str, list[float], str, bool]], *, label: str, width: int = 460, height: int = 220
) -> str:
    """(name, per-layer values, colour, dashed) polylines on one scale from 0; each names itself."""
    left, bottom, top = 40, 24, 18
    plot_w, plot_h = width - left - 8, height - top - bottom
    layers = max([len(values) for _, values, _, _ in curves] + [1])
    high = max([v for _, values, _, _ in curves for v in values] + [1e-9])
    sx = lambda i: left + plot_w * (i / (layers - 1) if layers > 1 else 0.5)
    sy = lambda v: top + plot_h * (1 - v / high)
    dash = ' stroke-dasharray="4 3"'
    lines = "".join(
        f'<polyline class="curve" data-name="{escape(name)}" data-points="{len(values)}" fill="none" '
        f'stroke="{colour}" stroke-width="1.5"{dash if dashed else ""} '
        f'points="{" ".join(f"{sx(i):.1f},{sy(v):.1f}" for i, v in enumerate(values))}"><title>{escape(name)}</title></polyline>'
        for name, values, colour, dashed in curves
    )
    return (
        f'<svg class="chart curves" data-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}"><text x="{left}" y="12" class="axis">{escape(label)}</text>'
        f'<text x="4" y="{top + 8}" class="axis">{high:.3g}</text><text x="4" y="{top + plot_h}" class="axis">0</text>'
        f'<text x="{left}" y="{height - 6}" class="axis">layer 0</text><text x="{width - 8}" y="{height - 6}" '
        f'class="axis" text-anchor="end">layer {layers - 1}</text>{lines}</svg>'
    )


def _curves(kind: str, model: dict, other: dict | None) -> list[tuple[str, list[float], str, bool]]:
    ks = list(model["distances"][kind])
    curves = [(f"k={k}", model["distances"][kind][k], K_COLOURS[i % len(K_COLOURS)], False) for i, k in enumerate(ks)]
    if other:
        curves += [
            (f"compare k={k}", other["distances"][kind][k], K_COLOURS[i % len(K_COLOURS)], True)
            for i, k in enumerate(ks)
            if k in other["distances"][kind]
        ]
    return curves


def prefix_curves(model: dict, other: dict | None, layer: int) -> str:
    """Distance against the prefix length k at ``layer``: refusal and compliance, a compared probe dashed."""
    ks = sorted(int(k) for k in model["distances"]["refusal"])
    at = lambda summary, kind: [summary["distances"][kind].get(str(k), [None] * (layer + 1))[layer] for k in ks]  # noqa: E731
    series = [
        ("refusal", at(model, "refusal"), "#d62728", False),
        ("compliance", at(model, "compliance"), "#2ca02c", False),
    ]
    if other:
        series += [("compare refusal", at(other, "refusal"), "#d62728", True)]
        series += [("compare compliance", at(other, "compliance"), "#2ca02c", True)]
    rows: list[list] = [["k", *(name for name, _, _, _ in series)]]
    rows += [[k, *("" if line[i] is None else line[i] for _, line, _, _ in series)] for i, k in enumerate(ks)]
    chart = points_chart([float(k) for k in ks], series, title=f"cosine distance at layer {layer} by prefix length k")
    return figure(chart, f"probe-prefix-layer-{layer}", rows)


def _writes_table(writes: dict) -> str:
    rows = []
    for name in CLASSES:
        entry, control = writes.get("classes", {}).get(name), writes.get("random", {}).get(name, {})
        if entry:
            rows.append(
                f"<tr><td>{name}</td><td>{entry['units']}</td><td>{entry.get('cosine_mean', 0):.4g}</td>"
                f"<td>{control.get('cosine_mean', float('nan')):.4g}</td>"
                f"<td>{100 * entry.get('write_share', 0):.2f} %</td>"
                f"<td>{100 * control.get('write_share', float('nan')):.2f} %</td></tr>"
            )
    return (
        '<table class="writes"><thead><tr><th>class</th><th>units</th><th>mean score</th><th>random: mean score</th>'
        f"<th>share of the write</th><th>random: share</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def write_histograms(writes: dict, *, width: int = 920, height: int = 170) -> str:
    """One panel per class: the share of its units in each score bin (bars, log scale), matched random as an outline.

    Scores pile up near 0 for every class, so the scale is logarithmic: the classes differ in their tails.
    Each bar carries its count (``data-count``) so tests can check the picture against the data.
    """
    edges = writes["edges"]
    names = [name for name in CLASSES if writes.get("classes", {}).get(name)]
    if not names or len(edges) < 2:
        return ""
    panel_w, left, top, bottom = width / len(names), 8, 18, 22
    plot_h, floor = height - top - bottom, 1e-4
    bins = len(edges) - 1
    sy = lambda share: top + plot_h * (1 - (math.log10(max(share, floor)) - math.log10(floor)) / -math.log10(floor))
    panels = []
    for number, name in enumerate(names):
        x0, bar_w = number * panel_w + left, (panel_w - 2 * left) / bins
        counts = writes["classes"][name]["histogram"]
        total = max(sum(counts), 1)
        bars = "".join(
            f'<rect class="bin" data-count="{count}" x="{x0 + i * bar_w:.1f}" y="{sy(count / total):.1f}" '
            f'width="{max(bar_w - 0.5, 0.5):.1f}" height="{top + plot_h - sy(count / total):.1f}" '
            f'fill="{COLORS[name]}"><title>{edges[i]:.3g} to {edges[i + 1]:.3g}: {count}</title></rect>'
            for i, count in enumerate(counts)
            if count
        )
        control = writes.get("random", {}).get(name, {}).get("histogram")
        outline = ""
        if control:
            control_total = max(sum(control), 1)
            points = " ".join(
                f"{x0 + (i + side) * bar_w:.1f},{sy(count / control_total):.1f}"
                for i, count in enumerate(control)
                for side in (0, 1)
            )
            outline = f'<polyline class="control" fill="none" stroke="#000" stroke-width="1" points="{points}"/>'
        share = 100 * writes["classes"][name].get("write_share", 0)
        panels.append(
            f'<g class="panel" data-class="{name}" data-units="{total}">{bars}{outline}'
            f'<text x="{x0:.1f}" y="12" class="axis" font-size="11">{name}: {total} units, {share:.1f} % of the write</text>'
            f'<text x="{x0:.1f}" y="{height - 6}" class="axis" font-size="10">{edges[0]:.2g}</text>'
            f'<text x="{x0 + bins * bar_w:.1f}" y="{height - 6}" class="axis" font-size="10" text-anchor="end">'
            f"{edges[-1]:.2g}</text></g>"
        )
    return (
        f'<svg class="chart histograms" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(panels)}</svg>'
        "<p>Share of each class's units per score bin (log scale, 0.01 % to 100 %); black outline: matched random "
        "units.</p>"
    )


def probe_sections(directory: Path) -> tuple[str, str]:
    data = json.loads((directory / "probe.json").read_text())
    model, other = (data["model"], data.get("compare")) if "distances" not in data else (data, None)
    direction = model["direction"]
    body = [
        f"<p>{model['queries']} harmful queries; {model['model']['layers']} layers; pool "
        f"{escape(model['config']['pool'])}. Refusal direction at layer {direction['layer']} (held-out accuracy "
        f"{direction['accuracy'][direction['layer']]:.2f}).</p>"
    ]
    if other:
        body.append(f"<p>Dashed: <code>{escape(str(other['model']['source']))}</code>.</p>")
    body += [
        "<h2>Cosine distance from the query's state, per layer</h2>",
        layer_curves(_curves("refusal", model, other), label="query + k refusal tokens"),
        layer_curves(_curves("compliance", model, other), label="query + k compliance tokens"),
        "<h2>Gap |d(refusal) − d(compliance)|</h2>",
        layer_curves(_curves("gap", model, other), label="gap", width=920),
        f"<h2>Distance per prefix length k at layer {direction['layer']} (the direction's layer)</h2>",
        prefix_curves(model, other, direction["layer"]),
    ]
    if model.get("unit_writes", {}).get("classes"):
        writes = model["unit_writes"]
        body += ["<h2>Unit writes along the refusal direction</h2>", _writes_table(writes), write_histograms(writes)]
    return f"Probe of {model['model']['source']}", "".join(body)
