"""Inline SVG plots for the reports: stacked bars per layer, a line chart, a heatmap table."""

from __future__ import annotations

from html import escape

CLASSES = ("SCU", "UCU", "CU", "RU")
COLORS = {"SCU": "#d62728", "UCU": "#1f77b4", "CU": "#c7c7c7", "RU": "#2ca02c"}


def legend() -> str:
    """A small HTML legend of the four class colours."""
    items = "".join(f'<span class="key"><i style="background:{COLORS[name]}"></i>{name}</span>' for name in CLASSES)
    return f'<div class="legend">{items}</div>'


def stacked_bars(layers: list[dict], part: str, *, width: int = 720, height: int = 220) -> str:
    """One stacked bar per layer of ``layer[part]`` counts (part: "heads" or "neurons").

    Each bar is a ``<g class="bar">`` carrying its counts as data attributes, so tests and
    scripts can read the numbers back from the picture.
    """
    pad_left, pad_bottom, pad_top = 48, 24, 8
    plot_w, plot_h = width - pad_left - 8, height - pad_bottom - pad_top
    totals = [sum(layer[part].get(name, 0) for name in CLASSES) for layer in layers]
    top = max(totals, default=0) or 1
    step = plot_w / max(len(layers), 1)
    bar_w = max(step * 0.8, 1)
    parts = [
        (
            f'<svg class="chart stacked" data-part="{part}" xmlns="http://www.w3.org/2000/svg" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(part)} per layer by class">'
        ),
        f'<text x="4" y="{pad_top + 10}" class="axis">{top}</text>',
        f'<text x="4" y="{pad_top + plot_h}" class="axis">0</text>',
        f'<line x1="{pad_left}" y1="{pad_top + plot_h}" x2="{width - 8}" y2="{pad_top + plot_h}" stroke="#888"/>',
    ]
    for i, layer in enumerate(layers):
        counts = {name: int(layer[part].get(name, 0)) for name in CLASSES}
        data = " ".join(f'data-{name.lower()}="{counts[name]}"' for name in CLASSES)
        x = pad_left + i * step + (step - bar_w) / 2
        y = pad_top + plot_h
        title = f"layer {layer.get('layer', i)}: " + ", ".join(f"{name} {counts[name]}" for name in CLASSES)
        rects = []
        for name in CLASSES:
            h = plot_h * counts[name] / top
            y -= h
            if h > 0:
                rects.append(
                    f'<rect x="{x:.2f}" y="{y:.2f}" width="{bar_w:.2f}" height="{h:.2f}" fill="{COLORS[name]}"/>'
                )
        parts.append(
            f'<g class="bar" data-layer="{layer.get("layer", i)}" {data}>'
            f"<title>{escape(title)}</title>{''.join(rects)}</g>"
        )
        if len(layers) <= 40 or i % 5 == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.2f}" y="{height - 8}" class="axis" '
                f'text-anchor="middle">{layer.get("layer", i)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    points: list[tuple[float, float]],
    *,
    width: int = 720,
    height: int = 240,
    x_label: str = "step",
    y_label: str = "loss",
    series: tuple[tuple[str, list[tuple[float, float]], str], ...] = (),
    series_label: str = "margin",
) -> str:
    """A polyline of ``points`` (x, y) with min/max labels on both axes.

    ``series`` (name, points, colour) are drawn over it on a second scale shared between them, labelled
    on the right (the refusal margins tracked beside the loss); each polyline carries its name as class.
    """
    if not points:
        return '<p class="muted">no points</p>'
    pad_left, pad_bottom, pad_top, pad_right = 56, 28, 10, 56 if series else 10
    plot_w, plot_h = width - pad_left - pad_right, height - pad_top - pad_bottom
    xs = [p[0] for p in points] + [p[0] for _, extra, _ in series for p in extra]
    ys = [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = lambda x: pad_left + plot_w * ((x - x0) / (x1 - x0) if x1 > x0 else 0.5)

    def scale(low: float, high: float):
        return lambda y: pad_top + plot_h * (1 - ((y - low) / (high - low) if high > low else 0.5))

    def polyline(line: list[tuple[float, float]], to_y, colour: str, attributes: str = "") -> str:
        path = " ".join(f"{sx(x):.2f},{to_y(y):.2f}" for x, y in line)
        return f'<polyline{attributes} fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>'

    extra_svg, legend = "", ""
    margins = [p[1] for _, extra, _ in series for p in extra]
    if margins:
        m0, m1 = min(margins), max(margins)
        right = width - pad_right + 4
        extra_svg = (
            f'<text x="{right}" y="{pad_top + 10}" class="axis">{m1:.3g}</text>'
            f'<text x="{right}" y="{pad_top + plot_h}" class="axis">{m0:.3g}</text>'
        )
        for number, (name, extra, colour) in enumerate(series):
            extra_svg += polyline(
                extra,
                scale(m0, m1),
                colour,
                f' class="series {escape(name)}" data-series="{escape(name)}" data-points="{len(extra)}"',
            )
            legend += (
                f'<text x="{pad_left + 8 + 180 * number}" y="{pad_top + 12}" class="axis" fill="{colour}">'
                f"{escape(name)} ({escape(series_label)}, right)</text>"
            )
    return (
        f'<svg class="chart line" data-points="{len(points)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(y_label)} by {escape(x_label)}">'
        f'<line x1="{pad_left}" y1="{pad_top + plot_h}" x2="{width - pad_right}" y2="{pad_top + plot_h}" stroke="#888"/>'
        f'<line x1="{pad_left}" y1="{pad_top}" x2="{pad_left}" y2="{pad_top + plot_h}" stroke="#888"/>'
        f'<text x="4" y="{pad_top + 10}" class="axis">{y1:.4g}</text>'
        f'<text x="4" y="{pad_top + plot_h}" class="axis">{y0:.4g}</text>'
        f'<text x="{pad_left}" y="{height - 8}" class="axis">{x0:g}</text>'
        f'<text x="{width - pad_right}" y="{height - 8}" class="axis" text-anchor="end">{x1:g} {escape(x_label)}</text>'
        f"{polyline(points, scale(y0, y1), '#1f77b4')}{extra_svg}{legend}</svg>"
    )


def heatmap_table(classes: list[str], counts: list[list[int]], fractions: list[list[float]] | None = None) -> str:
    """The role-transfer matrix as a table whose cells are shaded by their row fraction."""
    if fractions is None:
        fractions = [[cell / max(sum(row), 1) for cell in row] for row in counts]
    head = "".join(f"<th>{escape(name)}</th>" for name in classes)
    rows = []
    for name, row, fracs in zip(classes, counts, fractions):
        cells = "".join(
            f'<td class="heat" data-count="{cell}" style="background:rgba(214,39,40,{0.08 + 0.85 * frac:.2f})">'
            f"{cell}<small> {100 * frac:.1f}%</small></td>"
            for cell, frac in zip(row, fracs)
        )
        rows.append(f"<tr><th>{escape(name)}</th>{cells}</tr>")
    return (
        f'<table class="heatmap"><thead><tr><th>before \\ after</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
