"""Report figures of an audit's unit map, from its unit_map.safetensors (numpy, no torch, no script).

The same pictures as the dashboard's unitmap.js, drawn from the same arrays
(``ssah_engine.unitmap_arrays``), with the same classes and data attributes: z_S against z_U for every
unit (neurons binned per class on asinh axes, heads as points, the cut lines, the regions named),
layer x head heatmaps of the label and of z_S - z_U, SCU and RU per layer on their own scales, and the
neurons of the layer with the most SCU neurons. Each figure links its SVG and its data (CSV).
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from ssah_engine.unitmap_arrays import TENSORS_FILE, figure_data, layer_neurons, read_arrays

from .figures import figure
from .svg import CLASSES, COLORS

LEVELS = 8
TICKS = (-500, -200, -100, -50, -20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50, 100, 200, 500)
FONT = 'font-family="system-ui,sans-serif"'


def _colour(name: str) -> str:
    return "#8c8c8c" if name == "CU" else COLORS[name]


def _text(x: float, y: float, text: object, extra: str = "", size: int = 10, fill: str = "#555") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" {FONT} {extra}>{escape(str(text))}</text>'


def _cut(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def _r(value: float | None) -> float | str:
    return "" if value is None else round(value, 4)


class Plane:
    """An empty (z_S, z_U) plane on asinh axes over [lo, hi] with the cut lines and the class regions named."""

    def __init__(self, lo: float, hi: float, cuts: dict, *, size: int = 500, title: str = "", cls: str = "", clip: str):
        self.left, self.top, self.size = 58, 46, size
        self.a, b = math.asinh(lo), math.asinh(hi)
        self.span = b - self.a if b > self.a else 1.0
        width, height = self.left + size + 16, self.top + size + 44
        self.clip = clip
        self.head = [
            f'<svg class="chart plane {cls}" data-lo="{lo}" data-hi="{hi}" xmlns="http://www.w3.org/2000/svg" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>'
            f'<defs><clipPath id="{clip}"><rect x="{self.left}" y="{self.top}" width="{size}" height="{size}"/>'
            "</clipPath></defs>",
            _text(self.left, 12, title, size=12, fill="#222"),
            _text(self.left + size / 2, height - 8, "z_S (safety), asinh scale", 'text-anchor="middle"'),
            _text(
                14,
                self.top + size / 2,
                "z_U (utility)",
                f'text-anchor="middle" transform="rotate(-90 14 {self.top + size / 2})"',
            ),
        ]
        for t in (t for t in TICKS if lo <= t <= hi):
            x, y = self.px(t), self.py(t)
            self.head += [
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{self.top}" y2="{self.top + size}" stroke="#eee"/>',
                f'<line x1="{self.left}" x2="{self.left + size}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>',
                _text(x, self.top + size + 14, t, 'text-anchor="middle"'),
                _text(self.left - 4, y + 3, t, 'text-anchor="end"'),
            ]
        self.head.append(
            f'<rect x="{self.left}" y="{self.top}" width="{size}" height="{size}" fill="none" stroke="#888"/>'
        )
        self.lines = self._cuts(lo, hi, cuts)

    def px(self, z: float) -> float:
        return self.left + self.size * (math.asinh(z) - self.a) / self.span

    def py(self, z: float) -> float:
        return self.top + self.size * (1 - (math.asinh(z) - self.a) / self.span)

    def _cuts(self, lo: float, hi: float, cuts: dict) -> list[str]:
        scu, ucu, ru = cuts.get("scu"), cuts.get("ucu"), cuts.get("ru")
        out = [f'<g class="cuts" clip-path="url(#{self.clip})">']

        def curve(f, keep, name: str) -> None:
            points = []
            for i in range(241):
                zs = math.sinh(self.a + self.span * i / 240)
                zu = f(zs)
                if lo - 1e-9 <= zu <= hi + 1e-9 and keep(zs, zu):
                    points.append(f"{self.px(zs):.1f},{self.py(zu):.1f}")
            if len(points) > 1:
                out.append(
                    f'<polyline class="cut" data-cut="{name}" points="{" ".join(points)}" fill="none" '
                    'stroke="#222" stroke-width="1.2" stroke-dasharray="5 3"/>'
                )

        if scu is not None:
            curve(lambda zs: zs - scu, lambda zs, zu: True, "scu")
        if ucu is not None:
            curve(lambda zs: zs - ucu, lambda zs, zu: True, "ucu")
        if ru is not None:
            curve(
                lambda zs: ru - zs,
                lambda zs, zu: (scu is None or zs - zu < scu) and (ucu is None or zs - zu > ucu),
                "ru",
            )

        def inside(name: str, zs: float, zu: float) -> bool:
            high = scu is not None and zs - zu >= scu
            low = ucu is not None and zs - zu <= ucu
            redundant = not high and not low and ru is not None and zs + zu <= ru
            return {"SCU": high, "UCU": low, "RU": redundant, "CU": not (high or low or redundant)}[name]

        a, span, b = self.a, self.span, self.a + self.span
        mid = (a + b) / 2 if ru is None else math.asinh(ru / 2)
        spots = {
            "SCU": [(a + 0.9 * span, a + 0.06 * span)],
            "UCU": [(a + 0.1 * span, a + 0.94 * span)],
            "RU": [((a + mid) / 2,) * 2, (a + 0.15 * span,) * 2],
            "CU": [(mid + 0.6 * (b - mid),) * 2, (a + 0.85 * span,) * 2],
        }
        for name, candidates in spots.items():
            for s, u in candidates:
                zs, zu = math.sinh(s), math.sinh(u)
                if inside(name, zs, zu):
                    out.append(
                        _text(
                            self.px(zs),
                            self.py(zu),
                            name,
                            f'class="region" data-class="{name}" font-weight="700" text-anchor="middle" '
                            'stroke="#fff" stroke-width="3" paint-order="stroke"',
                            size=15,
                            fill=_colour(name),
                        )
                    )
                    break
        out.append("</g>")
        return out

    def svg(self, marks: list[str], extra: tuple[str, ...] | list[str] = ()) -> str:
        return "".join(
            [*self.head, f'<g clip-path="url(#{self.clip})">', *marks, "</g>", *self.lines, *extra, "</svg>"]
        )


def scatter(payload: dict) -> str:
    """Every unit: neurons as per-class density paths, heads as points, with the cut lines."""
    grid, heads, per_layer = payload["density"], payload["heads"], payload["heads_per_layer"]
    lo, hi = grid["range"]
    plane = Plane(
        lo, hi, payload["cuts"], title="Every unit: z_S against z_U (neurons binned, heads as points)",
        cls="unit-scatter", clip="um-clip-scatter",
    )  # fmt: skip
    bins = grid["bins"]
    cell, x0, y0 = plane.size / bins, plane.left, plane.top + plane.size
    top = max([flat[i] for flat in grid["counts"].values() for i in range(2, len(flat), 3)], default=1)
    scale = math.log1p(max(top, 1))
    marks = []
    for name in ("CU", "RU", "UCU", "SCU"):
        flat = grid["counts"][name]
        paths: list[tuple[list[str], list[int]]] = [([], []) for _ in range(LEVELS)]
        for i in range(0, len(flat), 3):
            n = flat[i + 2]
            level = max(0, min(LEVELS - 1, math.floor(LEVELS * math.log1p(n) / scale - 1e-9)))
            paths[level][0].append(
                f"M{x0 + flat[i] * cell:.2f} {y0 - (flat[i + 1] + 1) * cell:.2f}h{cell:.2f}v{cell:.2f}h-{cell:.2f}z"
            )
            paths[level][1].append(n)
        for level, (d, counts) in enumerate(paths):
            if d:
                marks.append(
                    f'<path class="density" data-class="{name}" data-level="{level}" data-units="{sum(counts)}" '
                    f'data-cells="{len(counts)}" d="{"".join(d)}" fill="{_colour(name)}" '
                    f'fill-opacity="{0.18 + 0.82 * (level + 1) / LEVELS:.2f}"/>'
                )
    for i, code in enumerate(heads["labels"]):
        zs, zu = (heads["z_safety"] or [None] * len(heads["labels"]))[i], heads["z_utility"][i]
        if zs is None or zu is None:
            continue
        name, layer, head = CLASSES[code], i // per_layer, i % per_layer
        marks.append(
            f'<circle class="head" data-class="{name}" data-layer="{layer}" data-head="{head}" '
            f'cx="{plane.px(zs):.1f}" cy="{plane.py(zu):.1f}" r="3.2" fill="{_colour(name)}" stroke="#000" '
            f'stroke-width="0.7"><title>layer {layer} head {head}: {name}, z_S {zs:.4g}, z_U {zu:.4g}</title></circle>'
        )
    legend = []
    for k, name in enumerate(CLASSES):
        n = sum(grid["counts"][name][2::3]) + grid["missing"][name]
        x, y = plane.left + 4 + 250 * (k % 2), 27 + 12 * (k // 2)
        legend += [
            f'<rect x="{x}" y="{y - 8}" width="9" height="9" fill="{_colour(name)}"/>',
            _text(x + 13, y, f"{name}: {n} neurons, {heads['labels'].count(CLASSES.index(name))} heads"),
        ]
    edge = lambda k: _r(math.sinh(plane.a + plane.span * k / bins))  # noqa: E731
    rows: list[list] = [
        ["part", "class", "layer", "head", "z_safety_from", "z_safety_to", "z_utility_from", "z_utility_to", "units"]
    ]
    for name, flat in grid["counts"].items():
        for i in range(0, len(flat), 3):
            i_s, i_u = flat[i], flat[i + 1]
            rows.append(["neurons", name, "", "", edge(i_s), edge(i_s + 1), edge(i_u), edge(i_u + 1), flat[i + 2]])
    for i, code in enumerate(heads["labels"]):
        zs, zu = heads["z_safety"][i], heads["z_utility"][i]
        rows.append(["head", CLASSES[code], i // per_layer, i % per_layer, zs, zs, zu, zu, 1])
    return figure(plane.svg(marks, legend), "unit-map-scatter", rows)


def head_grid(payload: dict, mode: str) -> str:
    """Layer x head cells: the label's colour (mode "label") or z_S - z_U, red above 0, blue below ("diff")."""
    layers, per_layer, heads = payload["layers"], payload["heads_per_layer"], payload["heads"]
    cw, ch = max(6.0, min(32.0, 520 / per_layer)), max(5.0, min(18.0, 460 / layers))
    left, top = 52, 34
    width, height = left + per_layer * cw + 120, top + layers * ch + 30
    zs_all = heads["z_safety"] or [None] * len(heads["labels"])
    diffs = [None if s is None or u is None else s - u for s, u in zip(zs_all, heads["z_utility"])]
    top_abs = max([abs(d) for d in diffs if d is not None], default=0.0) or 1e-9

    def shade(d: float | None) -> str:
        if d is None:
            return "#fff"
        t = min(1.0, math.asinh(abs(d)) / math.asinh(top_abs))
        r, g, b = (214, 39, 40) if d > 0 else (31, 119, 180)
        return f"rgb({round(255 + (r - 255) * t)},{round(255 + (g - 255) * t)},{round(255 + (b - 255) * t)})"

    title = "Label of each head (layer × head)" if mode == "label" else "z_S − z_U of each head (layer × head)"
    parts = [
        f'<svg class="chart head-grid" data-mode="{mode}" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}"><rect x="0" y="0" width="{width:.0f}" '
        f'height="{height:.0f}" fill="#fff"/>',
        _text(left, 14, title, size=12, fill="#222"),
        _text(left + per_layer * cw / 2, height - 6, "head", 'text-anchor="middle"'),
        _text(
            12,
            top + layers * ch / 2,
            "layer",
            f'text-anchor="middle" transform="rotate(-90 12 {top + layers * ch / 2})"',
        ),
    ]
    for i, code in enumerate(heads["labels"]):
        layer, head, name, d = i // per_layer, i % per_layer, CLASSES[code], diffs[i]
        fill = COLORS[name] if mode == "label" else shade(d)
        parts.append(
            f'<rect class="cell" data-layer="{layer}" data-head="{head}" data-class="{name}" data-value="{_r(d)}" '
            f'x="{left + head * cw:.1f}" y="{top + layer * ch:.1f}" width="{cw - 1:.1f}" height="{ch - 1:.1f}" '
            f'fill="{fill}"><title>layer {layer} head {head}: {name}, z_S − z_U '
            f"{'n/a' if d is None else f'{d:.4g}'}</title></rect>"
        )
    for layer in range(0, layers, math.ceil(10 / ch)):
        parts.append(_text(left - 4, top + layer * ch + ch / 2 + 3, layer, 'text-anchor="end"'))
    for head in range(0, per_layer, math.ceil(14 / cw)):
        parts.append(_text(left + head * cw + cw / 2, top + layers * ch + 12, head, 'text-anchor="middle"'))
    lx = left + per_layer * cw + 16
    keys = (
        [(COLORS[name], name) for name in CLASSES]
        if mode == "label"
        else [(shade(f * top_abs), f"{f * top_abs:.4g}") for f in (1, 0.5, 0, -0.5, -1)]
    )
    for k, (fill, label) in enumerate(keys):
        parts += [
            f'<rect x="{lx:.1f}" y="{top + 16 * k}" width="10" height="10" fill="{fill}" stroke="#ccc"/>',
            _text(lx + 14, top + 16 * k + 9, label),
        ]
    parts.append("</svg>")
    rows: list[list] = [["layer", "head", "label", "z_safety", "z_utility", "z_safety_minus_z_utility"]]
    for i, code in enumerate(heads["labels"]):
        zs, zu = zs_all[i], heads["z_utility"][i]
        rows.append([i // per_layer, i % per_layer, CLASSES[code], _r(zs), _r(zu), _r(diffs[i])])
    return figure("".join(parts), "unit-map-head-labels" if mode == "label" else "unit-map-head-diff", rows)


def layer_counts(payload: dict) -> str:
    """SCU and RU per layer, neurons and heads, each panel on its own scale."""
    layers, pw, ph, gap = payload["layers"], 430, 150, 24
    width, height = 2 * pw + gap + 16, 2 * (ph + 40) + 10
    parts = [
        f'<svg class="chart layer-counts" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>'
    ]
    for row, name in enumerate(("SCU", "RU")):
        for col, part in enumerate(("neurons", "heads")):
            counts = payload["layer_counts"][part][name]
            top = max([1, *counts])
            x0, y0, plot_w = 44 + col * (pw + gap), 24 + row * (ph + 40), pw - 44
            step = plot_w / layers
            bw = max(1.0, step * 0.8)
            parts += [
                f'<g class="panel" data-class="{name}" data-part="{part}">',
                _text(x0, y0 - 8, f"{name} {part} per layer (scale 0–{top})", size=12, fill="#222"),
                _text(x0 - 4, y0 + 8, top, 'text-anchor="end"'),
                _text(x0 - 4, y0 + ph, 0, 'text-anchor="end"'),
                f'<line x1="{x0}" x2="{x0 + plot_w}" y1="{y0 + ph}" y2="{y0 + ph}" stroke="#888"/>',
            ]
            for layer, n in enumerate(counts):
                bh = ph * n / top
                parts.append(
                    f'<rect class="count" data-class="{name}" data-part="{part}" data-layer="{layer}" data-count="{n}" '
                    f'x="{x0 + layer * step + (step - bw) / 2:.2f}" y="{y0 + ph - bh:.2f}" width="{bw:.2f}" '
                    f'height="{bh:.2f}" fill="{COLORS[name]}"><title>layer {layer}: {n} {name} {part}</title></rect>'
                )
                if step >= 14 or layer % math.ceil(14 / step) == 0:
                    parts.append(_text(x0 + layer * step + step / 2, y0 + ph + 12, layer, 'text-anchor="middle"'))
            parts.append("</g>")
    parts.append("</svg>")
    rows: list[list] = [["layer", *[f"{c}_{p}" for c in CLASSES for p in ("heads", "neurons")]]]
    for layer in range(layers):
        rows.append([layer, *[payload["layer_counts"][p][c][layer] for c in CLASSES for p in ("heads", "neurons")]])
    return figure("".join(parts), "unit-map-layer-counts", rows)


def zoom(layer: dict, cuts: dict) -> str:
    """One layer's neurons as points on the layer's own range, with the cut lines."""
    values = [v for v in (layer["z_safety"] or []) + layer["z_utility"] if v is not None]
    lo, hi = min(values), max(values)
    plane = Plane(
        lo, hi if hi > lo else lo + 1, cuts, size=420, cls="zoom", clip="um-clip-zoom",
        title=f"Layer {layer['layer']}: its {len(layer['labels'])} neurons",
    )  # fmt: skip
    plane.head[0] = plane.head[0].replace('zoom"', f'zoom" data-layer="{layer["layer"]}"', 1)
    marks = []
    for name in ("CU", "RU", "UCU", "SCU"):
        code = CLASSES.index(name)
        d = [
            f"M{plane.px(s) - 1.5:.1f} {plane.py(u) - 1.5:.1f}h3v3h-3z"
            for c, s, u in zip(layer["labels"], layer["z_safety"], layer["z_utility"])
            if c == code and s is not None and u is not None
        ]
        if d:
            opacity = 0.5 if name == "CU" else 0.9
            marks.append(
                f'<path class="points" data-class="{name}" data-units="{len(d)}" d="{"".join(d)}" '
                f'fill="{_colour(name)}" fill-opacity="{opacity}"/>'
            )
    rows: list[list] = [["neuron", "label", "z_safety", "z_utility"]]
    for i, (c, s, u) in enumerate(zip(layer["labels"], layer["z_safety"], layer["z_utility"])):
        rows.append([i, CLASSES[c], s, u])
    return figure(plane.svg(marks), f"unit-map-layer-{layer['layer']}", rows)


def unit_map_sections(directory: Path, zoom_layer: int | None = None) -> list[str]:
    """The unit-map figures of an audit directory; nothing when its unit_map.safetensors is not there."""
    if not (directory / TENSORS_FILE).is_file():
        return []
    arrays = read_arrays(directory)
    payload = figure_data(arrays)
    if zoom_layer is None:
        scu = payload["layer_counts"]["neurons"]["SCU"]
        zoom_layer = scu.index(max(scu))
    body = []
    if payload["density"] is not None:
        cuts = payload["cuts"]
        body += [
            "<h2>Every unit: z_S against z_U</h2>",
            f'<p class="muted">Dashed lines: the cuts (SCU: z_S − z_U ≥ {_cut(cuts["scu"])}; UCU: z_S − z_U ≤ '
            f"{_cut(cuts['ucu'])}; RU: z_S + z_U ≤ {_cut(cuts['ru'])} among the rest). Neurons in "
            f"{payload['density']['bins']}² bins, darker = more units; heads outlined.</p>",
            scatter(payload),
        ]
    body += ["<h2>Attention heads: layer × head</h2>", head_grid(payload, "label")]
    if payload["density"] is not None:
        body.append(head_grid(payload, "diff"))
    body += ["<h2>SCU and RU per layer, each on its own scale</h2>", layer_counts(payload)]
    if arrays.z_safety is not None:
        body += [
            "<h2>One layer's neurons (the layer with the most SCU neurons)</h2>",
            zoom(layer_neurons(arrays, zoom_layer), payload["cuts"]),
        ]
    return body
