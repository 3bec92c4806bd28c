"""Report figures across runs: rates with Wilson intervals (the ablation comparison), role transfer as a flow,
and the downloads under each figure (its SVG and its data as CSV, as data: links: the report has no script).

The same pictures as the dashboard's figures.js, with the same data attributes, so one check reads both.
"""

from __future__ import annotations

import base64
import csv
import io
from html import escape
from typing import Any

from .svg import CLASSES, COLORS

CONDITION_COLOURS = {"system": "#1f77b4", "no_system": "#ff7f0e", "suffix": "#9467bd"}


def _num(value: float) -> str:
    return f"{value:.2f}"


def csv_text(rows: list[list[Any]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def figure(svg: str, name: str, rows: list[list[Any]]) -> str:
    """The SVG with links that download it and its data (CSV, header first) without a script."""
    link = lambda data, media, ext, label: (  # noqa: E731
        f'<a download="{escape(name)}.{ext}" data-format="{ext}" '
        f'href="data:{media};base64,{base64.b64encode(data.encode()).decode()}">{label}</a>'
    )
    return (
        f'<figure class="figure" data-figure="{escape(name)}">{svg}<figcaption class="downloads">Download '
        f"{link(svg, 'image/svg+xml', 'svg', 'SVG')} · {link(csv_text(rows), 'text/csv', 'csv', 'data (CSV)')}"
        "</figcaption></figure>"
    )


def interval_chart(rows: list[dict], *, title: str = "", width: int = 760) -> str:
    """One line per row (label, points [{condition, rate, ci95}], range or None): a dot per condition with its
    95 % interval as a bar; ``range``, a control's spread over seeds, as a grey band behind it."""
    row_h, top, bottom, left, right = 24, 34, 22, 260, 20
    plot_w = width - left - right
    height = top + bottom + row_h * max(len(rows), 1)
    sx = lambda v: left + plot_w * v  # noqa: E731
    parts = [
        f'<svg class="chart intervals" data-title="{escape(title)}" data-left="{left}" data-plot-width="{plot_w}" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<text x="4" y="12" class="axis">{escape(title)}</text>'
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(
            f'<line x1="{sx(tick)}" x2="{sx(tick)}" y1="{top - 6}" y2="{height - bottom}" stroke="#eee"/>'
            f'<text x="{sx(tick)}" y="{height - 6}" class="axis" text-anchor="middle">{100 * tick:g} %</text>'
        )
    conditions = list(dict.fromkeys(p["condition"] for row in rows for p in row["points"]))
    for i, condition in enumerate(conditions):
        parts.append(
            f'<circle cx="{left + 130 * i + 4}" cy="22" r="3.5" fill="{CONDITION_COLOURS.get(condition, "#333")}"/>'
            f'<text x="{left + 130 * i + 11}" y="26" class="axis">{escape(condition)}</text>'
        )
    for r, row in enumerate(rows):
        y = top + row_h * (r + 0.5)
        parts.append(
            f'<g class="interval-row" data-label="{escape(row["label"])}"><text x="{left - 8}" y="{y + 4}" '
            f'class="axis" text-anchor="end">{escape(row["label"])}</text>'
        )
        if row.get("range"):
            low, high = row["range"]
            parts.append(
                f'<rect class="range" x="{_num(sx(low))}" y="{y - 9}" height="18" fill="#ddd" '
                f'width="{_num(max(1.0, sx(high) - sx(low)))}" data-low="{low}" data-high="{high}">'
                f"<title>mean over seeds ranges {100 * low:.1f} % to {100 * high:.1f} %</title></rect>"
            )
        points = row["points"]
        for c, point in enumerate(points):
            yy = y + (c - (len(points) - 1) / 2) * 7
            colour = CONDITION_COLOURS.get(point["condition"], "#333")
            low, high = point["ci95"]
            counts = f" ({point['k']} of {point['n']})" if point.get("n") is not None else ""
            parts.append(
                f'<g class="interval" data-condition="{escape(point["condition"])}" data-rate="{point["rate"]}" '
                f'data-low="{low}" data-high="{high}">'
                f'<line class="bar" x1="{sx(low)}" x2="{sx(high)}" y1="{yy}" y2="{yy}" stroke="{colour}" stroke-width="1.5"/>'
                f'<line x1="{sx(low)}" x2="{sx(low)}" y1="{yy - 3}" y2="{yy + 3}" stroke="{colour}"/>'
                f'<line x1="{sx(high)}" x2="{sx(high)}" y1="{yy - 3}" y2="{yy + 3}" stroke="{colour}"/>'
                f'<circle class="rate" cx="{sx(point["rate"])}" cy="{yy}" r="3.5" fill="{colour}"/>'
                f"<title>{escape(row['label'])}, {escape(point['condition'])}: {100 * point['rate']:.1f} % "
                f"[{100 * low:.1f} %, {100 * high:.1f} %]{counts}</title></g>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def interval_points(by_condition: dict | None) -> list[dict]:
    """``{condition: {rate, k, n, ci95}}`` (an evaluation's intervals) as chart points, empty conditions left out."""
    return [
        {"condition": condition, "rate": v["rate"], "ci95": v["ci95"], "k": v.get("k"), "n": v.get("n")}
        for condition, v in (by_condition or {}).items()
        if v and v.get("ci95")
    ]


def sankey(classes: list[str], counts: list[list[int]], *, width: int = 640, height: int = 360) -> str:
    """Role transfer as a flow: before classes left, after classes right, one band per non-empty cell.

    Band thickness is proportional to the count (at least 1 px, so a class of 1 % of the units stays
    visible); each band carries ``data-from``, ``data-to``, ``data-count`` and ``data-thickness``.
    """
    top, bottom, gap, node_w, left, right = 14, 14, 14, 12, 110, 110
    flows = [(i, j, n) for i, row in enumerate(counts) for j, n in enumerate(row) if n > 0]
    row_totals = [sum(row) for row in counts]
    col_totals = [sum(row[j] for row in counts) for j in range(len(classes))]
    total = sum(n for _, _, n in flows)
    used = max(sum(1 for t in row_totals if t), sum(1 for t in col_totals if t), 1)
    available = height - top - bottom - gap * (used - 1)
    scale = max(available - len(flows), available / 2) / total if total else 0.0
    thickness = {(i, j): max(1.0, n * scale) for i, j, n in flows}

    def stack(side: int) -> list[tuple[float, float]]:
        places, y = [], float(top)
        for k in range(len(classes)):
            size = sum(t for key, t in thickness.items() if key[side] == k)
            places.append((y, size))
            if size:
                y += size + gap
        return places

    before, after = stack(0), stack(1)
    x0, x1 = left + node_w, width - right - node_w
    xm = (x0 + x1) / 2
    out_y = [place[0] for place in before]
    in_y = [place[0] for place in after]
    entry = {}
    for i, j, _ in sorted(flows, key=lambda f: (f[1], f[0])):
        entry[(i, j)] = in_y[j]
        in_y[j] += thickness[(i, j)]
    parts = [
        f'<svg class="chart sankey" data-mode="units" data-scale="{scale}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="role transfer">'
    ]
    for i, j, n in flows:
        t, ya, yb = thickness[(i, j)], out_y[i], entry[(i, j)]
        out_y[i] += t
        colour = COLORS.get(classes[i], "#999")
        share = 100 * n / row_totals[i]
        d = (
            f"M{x0},{ya:.2f} C{xm},{ya:.2f} {xm},{yb:.2f} {x1},{yb:.2f} L{x1},{yb + t:.2f} "
            f"C{xm},{yb + t:.2f} {xm},{ya + t:.2f} {x0},{ya + t:.2f} Z"
        )
        parts.append(
            f'<path class="flow" d="{d}" fill="{colour}" fill-opacity="0.45" stroke="{colour}" stroke-opacity="0.6" '
            f'stroke-width="0.5" data-from="{classes[i]}" data-to="{classes[j]}" data-count="{n}" '
            f'data-thickness="{t:.3f}"><title>{classes[i]} → {classes[j]}: {n} units ({share:.1f} % of '
            f"{classes[i]})</title></path>"
        )
    for k, name in enumerate(classes):
        for side, places, count, x, anchor, tx in (
            ("before", before, row_totals[k], left, "end", left - 6),
            ("after", after, col_totals[k], width - right - node_w, "start", width - right + 6),
        ):
            y, size = places[k]
            if size:
                parts.append(
                    f'<rect class="node" data-side="{side}" data-class="{name}" data-count="{count}" x="{x}" '
                    f'y="{y:.2f}" width="{node_w}" height="{size:.2f}" fill="{COLORS.get(name, "#999")}"/>'
                    f'<text x="{tx}" y="{y + size / 2 + 4:.2f}" class="axis" text-anchor="{anchor}">{name} {count}</text>'
                )
    parts.append(
        f'<text x="{left}" y="10" class="axis" text-anchor="end">before</text>'
        f'<text x="{width - right}" y="10" class="axis">after</text></svg>'
    )
    return "".join(parts)


def transfer_figure(transfer: dict, name: str) -> str:
    """A role_transfer.json (classes, counts) as a flow with its downloads."""
    classes = list(transfer.get("classes") or CLASSES)
    rows: list[list[Any]] = [["before", "after", "units"]]
    rows += [[classes[i], classes[j], n] for i, row in enumerate(transfer["counts"]) for j, n in enumerate(row)]
    return figure(sankey(classes, transfer["counts"]), name, rows)


def points_chart(
    xs: list[float],
    series: list[tuple[str, list[float | None], str, bool]],
    *,
    title: str = "",
    width: int = 900,
    height: int = 220,
) -> str:
    """Lines over numeric ``xs`` on one scale from 0: (name, values or None, colour, dashed); each dot carries
    ``data-series``, ``data-x`` and ``data-y``."""
    left, right, top, bottom = 52, 12, 24, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    a, b = min(xs), max(xs)
    values = [v for _, line, _, _ in series for v in line if v is not None]
    high = max(values + [1e-12])
    sx = lambda x: left + plot_w * ((x - a) / (b - a) if b > a else 0.5)  # noqa: E731
    sy = lambda v: top + plot_h * (1 - v / high)  # noqa: E731
    parts = [
        f'<svg class="chart points" data-title="{escape(title)}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}"><text x="4" y="12" class="axis">{escape(title)}</text>'
        f'<text x="4" y="{top + 8}" class="axis">{high:.4g}</text><text x="4" y="{top + plot_h}" class="axis">0</text>'
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#888"/>'
    ]
    parts += [f'<text x="{sx(x):.1f}" y="{height - 8}" class="axis" text-anchor="middle">{x:g}</text>' for x in xs]
    for number, (name, line, colour, dashed) in enumerate(series):
        present = [(x, v) for x, v in zip(xs, line) if v is not None]
        path = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v in present)
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        parts.append(
            f'<polyline class="line" data-series="{escape(name)}" fill="none" stroke="{colour}" stroke-width="1.5"{dash} '
            f'points="{path}"/><text x="{left + 8 + 150 * number}" y="{top + 4}" class="axis" fill="{colour}">'
            f"{escape(name)}</text>"
        )
        parts += [
            f'<circle class="point" data-series="{escape(name)}" data-x="{x:g}" data-y="{v}" cx="{sx(x):.1f}" '
            f'cy="{sy(v):.1f}" r="3" fill="{colour}"><title>{escape(name)} at {x:g}: {v:.4g}</title></circle>'
            for x, v in present
        ]
    parts.append("</svg>")
    return "".join(parts)
