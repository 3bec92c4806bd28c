// Unit-map figures of the audit page: z_S against z_U for every unit (neurons binned, heads as points) with the
// cut lines and the four class regions; layer × head heatmaps of the label and of z_S − z_U; SCU and RU per layer,
// each on its own scale; one layer's neurons. Data: GET /v1/audits/{id}/unit-map/arrays (pre-binned, compact) and
// .../layers/{layer}/neurons. Loaded after figures.js, before app.js; uses h, svg, api, fmt, CLASSES, COLORS, figure.
"use strict";

const UM_TICKS = [-500, -200, -100, -50, -20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50, 100, 200, 500];
const UM_LEVELS = 8;  // opacity steps of the density: one <path> per class and step keeps the DOM small
const UM_FONT = "font-family:system-ui,sans-serif";
const umColor = (name) => (name === "CU" ? "#8c8c8c" : COLORS[name]);  // CU's light grey vanishes at low density
const umText = (x, y, text, attrs = {}) => svg("text", { x, y, "font-size": 10, fill: "#555", style: UM_FONT, ...attrs }, text);
let umClips = 0;  // each plane clips to its own rectangle
const umRound = (v) => (v == null ? "" : Math.round(v * 1e4) / 1e4);

// An empty (z_S, z_U) plane on asinh axes over [lo, hi], with the cut lines and the class regions labelled.
function umPlane(lo, hi, cuts, { size = 500, title = "" } = {}) {
  const left = 58, top = 46, width = left + size + 16, height = top + size + 44;
  const a = Math.asinh(lo), b = Math.asinh(hi), span = b > a ? b - a : 1;
  const px = (z) => left + size * (Math.asinh(z) - a) / span, py = (z) => top + size * (1 - (Math.asinh(z) - a) / span);
  const clip = `um-clip-${++umClips}`;
  const root = svg("svg", { class: "chart plane", width, height, viewBox: `0 0 ${width} ${height}`,
    "data-lo": lo, "data-hi": hi },
  svg("rect", { x: 0, y: 0, width, height, fill: "#fff" }),
  svg("defs", {}, svg("clipPath", { id: clip }, svg("rect", { x: left, y: top, width: size, height: size }))),
  umText(left, 12, title, { "font-size": 12, fill: "#222" }),
  umText(left + size / 2, height - 8, "z_S (safety), asinh scale", { "text-anchor": "middle" }),
  umText(14, top + size / 2, "z_U (utility)", { "text-anchor": "middle", transform: `rotate(-90 14 ${top + size / 2})` }));
  const grid = svg("g", { class: "ticks" });
  for (const t of UM_TICKS.filter((t) => t >= lo && t <= hi)) {
    grid.append(svg("line", { x1: px(t), x2: px(t), y1: top, y2: top + size, stroke: "#eee" }),
      svg("line", { x1: left, x2: left + size, y1: py(t), y2: py(t), stroke: "#eee" }),
      umText(px(t), top + size + 14, t, { "text-anchor": "middle" }), umText(left - 4, py(t) + 3, t, { "text-anchor": "end" }));
  }
  root.append(grid, svg("rect", { x: left, y: top, width: size, height: size, fill: "none", stroke: "#888" }));
  const layer = svg("g", { "clip-path": `url(#${clip})` });
  root.append(layer);
  const lines = svg("g", { class: "cuts", "clip-path": `url(#${clip})` });
  // A cut line sampled in the plotted (asinh) space: z_U = f(z_S) is a curve there.
  const curve = (f, keep, name) => {
    const points = [];
    for (let i = 0; i <= 240; i++) {
      const zs = Math.sinh(a + span * i / 240), zu = f(zs);
      if (zu >= lo - 1e-9 && zu <= hi + 1e-9 && keep(zs, zu)) points.push(`${px(zs).toFixed(1)},${py(zu).toFixed(1)}`);
    }
    if (points.length > 1) lines.append(svg("polyline", { class: "cut", "data-cut": name, points: points.join(" "),
      fill: "none", stroke: "#222", "stroke-width": 1.2, "stroke-dasharray": "5 3" }));
  };
  const { scu, ucu, ru } = cuts;
  if (scu != null) curve((zs) => zs - scu, () => true, "scu");
  if (ucu != null) curve((zs) => zs - ucu, () => true, "ucu");
  if (ru != null) curve((zs) => ru - zs, (zs, zu) => (scu == null || zs - zu < scu) && (ucu == null || zs - zu > ucu), "ru");
  // Each class named at a corner that lies in its region.
  const inside = (name, zs, zu) => {
    const d = zs - zu, s = zs + zu, scuIn = scu != null && d >= scu, ucuIn = ucu != null && d <= ucu;
    return { SCU: scuIn, UCU: ucuIn, RU: !scuIn && !ucuIn && ru != null && s <= ru, CU: !scuIn && !ucuIn && !(ru != null && s <= ru) }[name];
  };
  // Corners for SCU and UCU; on the diagonal (z_S = z_U) below and above the RU cut for RU and CU.
  const diagonal = (t) => [t, t], mid = ru == null ? (a + b) / 2 : Math.asinh(ru / 2);
  const spots = { SCU: [[a + 0.9 * span, a + 0.06 * span]], UCU: [[a + 0.1 * span, a + 0.94 * span]],
    RU: [diagonal((a + mid) / 2), diagonal(a + 0.15 * span)], CU: [diagonal(mid + 0.6 * (b - mid)), diagonal(a + 0.85 * span)] };
  for (const [name, candidates] of Object.entries(spots)) {
    const spot = candidates.map(([s, u]) => [Math.sinh(s), Math.sinh(u)]).find(([zs, zu]) => inside(name, zs, zu));
    if (spot) lines.append(umText(px(spot[0]), py(spot[1]), name, { class: "region", "data-class": name,
      "font-size": 15, "font-weight": 700, fill: umColor(name), "text-anchor": "middle", stroke: "#fff", "stroke-width": 3,
      "paint-order": "stroke" }));
  }
  root.append(lines);
  return { root, layer, lines, px, py, left, top, size, a, span };
}

// Every unit: neurons as a density per class (its bins), heads as points on top.
function umScatter(arrays) {
  const grid = arrays.density, [lo, hi] = grid.range, bins = grid.bins;
  const plane = umPlane(lo, hi, arrays.cuts, { title: "Every unit: z_S against z_U (neurons binned, heads as points)" });
  plane.root.classList.add("unit-scatter");
  const cell = plane.size / bins, x0 = plane.left, y0 = plane.top + plane.size;
  let max = 1;
  for (const flat of Object.values(grid.counts)) for (let i = 2; i < flat.length; i += 3) max = Math.max(max, flat[i]);
  const scale = Math.log1p(max);
  for (const name of ["CU", "RU", "UCU", "SCU"]) {  // the small classes drawn last, on top
    const flat = grid.counts[name] || [], paths = Array.from({ length: UM_LEVELS }, () => ({ d: [], units: 0, cells: 0 }));
    for (let i = 0; i < flat.length; i += 3) {
      const n = flat[i + 2], level = Math.min(UM_LEVELS - 1, Math.floor(UM_LEVELS * Math.log1p(n) / scale - 1e-9));
      const p = paths[Math.max(0, level)];
      p.d.push(`M${(x0 + flat[i] * cell).toFixed(2)} ${(y0 - (flat[i + 1] + 1) * cell).toFixed(2)}h${cell.toFixed(2)}v${cell.toFixed(2)}h-${cell.toFixed(2)}z`);
      p.units += n;
      p.cells += 1;
    }
    paths.forEach((p, level) => p.cells && plane.layer.append(svg("path", { class: "density", "data-class": name,
      "data-level": level, "data-units": p.units, "data-cells": p.cells, d: p.d.join(""), fill: umColor(name),
      "fill-opacity": (0.18 + 0.82 * (level + 1) / UM_LEVELS).toFixed(2) })));
  }
  const heads = arrays.heads, H = arrays.heads_per_layer, dots = svg("g", { class: "heads" });
  heads.labels.forEach((code, i) => {
    const zs = heads.z_safety[i], zu = heads.z_utility[i];
    if (zs == null || zu == null) return;
    const name = arrays.classes[code];
    dots.append(svg("circle", { class: "head", "data-class": name, "data-layer": Math.floor(i / H), "data-head": i % H,
      cx: plane.px(zs).toFixed(1), cy: plane.py(zu).toFixed(1), r: 3.2, fill: umColor(name), stroke: "#000", "stroke-width": 0.7 },
    svg("title", {}, `layer ${Math.floor(i / H)} head ${i % H}: ${name}, z_S ${fmt(zs)}, z_U ${fmt(zu)}`)));
  });
  plane.layer.append(dots);
  // Legend: each class with its units (bins + heads), two to a row.
  arrays.classes.forEach((name, k) => {
    const flat = grid.counts[name] || [];
    let n = grid.missing[name] || 0;
    for (let i = 2; i < flat.length; i += 3) n += flat[i];
    const nh = heads.labels.filter((c) => arrays.classes[c] === name).length, x = plane.left + 4 + 250 * (k % 2), y = 27 + 12 * Math.floor(k / 2);
    plane.root.append(svg("rect", { x, y: y - 8, width: 9, height: 9, fill: umColor(name) }),
      umText(x + 13, y, `${name}: ${n} neurons, ${nh} heads`, { class: "legend-entry", "data-class": name }));
  });
  // Hover: the bin under the pointer, its units per class.
  const readout = umText(plane.left + plane.size, plane.top + plane.size + 30, "", { "text-anchor": "end", class: "readout" });
  plane.root.append(readout);
  let lookup = null;
  plane.root.addEventListener("mousemove", (event) => {
    const box = plane.root.getBoundingClientRect();
    const i = Math.floor((event.clientX - box.left - x0) / cell), j = Math.floor((y0 - (event.clientY - box.top)) / cell);
    if (i < 0 || j < 0 || i >= bins || j >= bins) return readout.replaceChildren();
    if (!lookup) {
      lookup = new Map();
      for (const [name, flat] of Object.entries(grid.counts))
        for (let k = 0; k < flat.length; k += 3) lookup.set(flat[k] * bins + flat[k + 1], [...(lookup.get(flat[k] * bins + flat[k + 1]) || []), `${name} ${flat[k + 2]}`]);
    }
    const edge = (k) => fmt(Math.sinh(plane.a + plane.span * k / bins));
    readout.textContent = `z_S ${edge(i)}…${edge(i + 1)}, z_U ${edge(j)}…${edge(j + 1)}: ${(lookup.get(i * bins + j) || ["no neurons"]).join(", ")}`;
  });
  const edge = (k) => umRound(Math.sinh(plane.a + plane.span * k / bins));
  const rows = [["part", "class", "layer", "head", "z_safety_from", "z_safety_to", "z_utility_from", "z_utility_to", "units"]];
  for (const [name, flat] of Object.entries(grid.counts))
    for (let i = 0; i < flat.length; i += 3) rows.push(["neurons", name, "", "", edge(flat[i]), edge(flat[i] + 1), edge(flat[i + 1]), edge(flat[i + 1] + 1), flat[i + 2]]);
  heads.labels.forEach((code, i) => rows.push(["head", arrays.classes[code], Math.floor(i / H), i % H,
    heads.z_safety[i], heads.z_safety[i], heads.z_utility[i], heads.z_utility[i], 1]));
  return figure(plane.root, "unit-map-scatter", rows);
}

// Layer × head grid: mode "label" (class colours) or "diff" (z_S − z_U, red above 0, blue below).
function umHeadGrid(arrays, mode) {
  const L = arrays.layers, H = arrays.heads_per_layer, heads = arrays.heads;
  const cw = Math.max(6, Math.min(32, 520 / H)), ch = Math.max(5, Math.min(18, 460 / L)), left = 52, top = 34;
  const width = left + H * cw + 120, height = top + L * ch + 30;
  const diffs = heads.labels.map((_, i) => (heads.z_safety?.[i] == null || heads.z_utility[i] == null ? null : heads.z_safety[i] - heads.z_utility[i]));
  const max = Math.max(1e-9, ...diffs.filter((d) => d != null).map(Math.abs));
  const shade = (d) => {
    if (d == null) return "#fff";
    const t = Math.min(1, Math.asinh(Math.abs(d)) / Math.asinh(max)), [r, g, b] = d > 0 ? [214, 39, 40] : [31, 119, 180];
    return `rgb(${Math.round(255 + (r - 255) * t)},${Math.round(255 + (g - 255) * t)},${Math.round(255 + (b - 255) * t)})`;
  };
  const title = mode === "label" ? "Label of each head (layer × head)" : "z_S − z_U of each head (layer × head)";
  const root = svg("svg", { class: `chart head-grid`, "data-mode": mode, width, height, viewBox: `0 0 ${width} ${height}` },
    svg("rect", { x: 0, y: 0, width, height, fill: "#fff" }), umText(left, 14, title, { "font-size": 12, fill: "#222" }),
    umText(left + H * cw / 2, height - 6, "head", { "text-anchor": "middle" }),
    umText(12, top + L * ch / 2, "layer", { "text-anchor": "middle", transform: `rotate(-90 12 ${top + L * ch / 2})` }));
  const cells = svg("g", { class: "cells" });
  heads.labels.forEach((code, i) => {
    const layer = Math.floor(i / H), head = i % H, name = arrays.classes[code], d = diffs[i];
    cells.append(svg("rect", { class: "cell", "data-layer": layer, "data-head": head, "data-class": name,
      "data-value": d == null ? "" : umRound(d), x: left + head * cw, y: top + layer * ch, width: cw - 1, height: ch - 1,
      fill: mode === "label" ? COLORS[name] : shade(d) },
    svg("title", {}, `layer ${layer} head ${head}: ${name}, z_S − z_U ${d == null ? "n/a" : fmt(d)}`)));
  });
  root.append(cells);
  const every = Math.ceil(10 / ch);
  for (let l = 0; l < L; l += every) root.append(umText(left - 4, top + l * ch + ch / 2 + 3, l, { "text-anchor": "end" }));
  for (let k = 0; k < H; k += Math.ceil(14 / cw)) root.append(umText(left + k * cw + cw / 2, top + L * ch + 12, k, { "text-anchor": "middle" }));
  const lx = left + H * cw + 16;
  if (mode === "label") arrays.classes.forEach((name, k) => root.append(svg("rect", { x: lx, y: top + 16 * k, width: 10, height: 10, fill: COLORS[name] }),
    umText(lx + 14, top + 16 * k + 9, name)));
  else [1, 0.5, 0, -0.5, -1].forEach((f, k) => root.append(svg("rect", { x: lx, y: top + 16 * k, width: 10, height: 10, fill: shade(f * max), stroke: "#ccc" }),
    umText(lx + 14, top + 16 * k + 9, fmt(f * max))));
  const rows = [["layer", "head", "label", "z_safety", "z_utility", "z_safety_minus_z_utility"]];
  heads.labels.forEach((code, i) => rows.push([Math.floor(i / H), i % H, arrays.classes[code], heads.z_safety?.[i] ?? "",
    heads.z_utility[i] ?? "", diffs[i] == null ? "" : umRound(diffs[i])]));
  return figure(root, mode === "label" ? "unit-map-head-labels" : "unit-map-head-diff", rows);
}

// SCU and RU per layer, heads and neurons, each panel on its own scale (in the stacked bars they are slivers).
function umLayerCounts(arrays) {
  const L = arrays.layers, pw = 430, ph = 150, gap = 24, width = 2 * pw + gap + 16, height = 2 * (ph + 40) + 10;
  const root = svg("svg", { class: "chart layer-counts", width, height, viewBox: `0 0 ${width} ${height}` },
    svg("rect", { x: 0, y: 0, width, height, fill: "#fff" }));
  [["SCU", 0], ["RU", 1]].forEach(([name, row]) => [["neurons", 0], ["heads", 1]].forEach(([part, col]) => {
    const counts = arrays.layer_counts[part][name], max = Math.max(1, ...counts);
    const x0 = 44 + col * (pw + gap), y0 = 24 + row * (ph + 40), plotW = pw - 44, step = plotW / L, bw = Math.max(1, step * 0.8);
    const panel = svg("g", { class: "panel", "data-class": name, "data-part": part },
      umText(x0, y0 - 8, `${name} ${part} per layer (scale 0–${max})`, { "font-size": 12, fill: "#222" }),
      umText(x0 - 4, y0 + 8, max, { "text-anchor": "end" }), umText(x0 - 4, y0 + ph, 0, { "text-anchor": "end" }),
      svg("line", { x1: x0, x2: x0 + plotW, y1: y0 + ph, y2: y0 + ph, stroke: "#888" }));
    counts.forEach((n, l) => {
      const bh = ph * n / max;
      panel.append(svg("rect", { class: "count", "data-class": name, "data-part": part, "data-layer": l, "data-count": n,
        x: (x0 + l * step + (step - bw) / 2).toFixed(2), y: (y0 + ph - bh).toFixed(2), width: bw.toFixed(2), height: bh.toFixed(2),
        fill: COLORS[name] }, svg("title", {}, `layer ${l}: ${n} ${name} ${part}`)));
      if (step >= 14 || l % Math.ceil(14 / step) === 0) panel.append(umText(x0 + l * step + step / 2, y0 + ph + 12, l, { "text-anchor": "middle" }));
    });
    root.append(panel);
  }));
  const rows = [["layer", ...CLASSES.flatMap((c) => [`${c}_heads`, `${c}_neurons`])]];
  for (let l = 0; l < L; l++) rows.push([l, ...CLASSES.flatMap((c) => [arrays.layer_counts.heads[c][l], arrays.layer_counts.neurons[c][l]])]);
  return figure(root, "unit-map-layer-counts", rows);
}

// One layer's neurons, each a point, on the layer's own range, with the global cut lines.
function umZoom(zoom, cuts) {
  const values = [...zoom.z_safety, ...zoom.z_utility].filter((v) => v != null);
  const lo = Math.min(...values), hi = Math.max(...values);
  const plane = umPlane(lo, hi > lo ? hi : lo + 1, cuts, { size: 420, title: `Layer ${zoom.layer}: its ${zoom.labels.length} neurons` });
  plane.root.classList.add("zoom");
  plane.root.setAttribute("data-layer", zoom.layer);
  for (const code of [2, 3, 1, 0]) {  // CU, RU, UCU, SCU: the small classes on top
    const d = [];
    zoom.labels.forEach((c, i) => {
      if (c !== code || zoom.z_safety[i] == null || zoom.z_utility[i] == null) return;
      d.push(`M${(plane.px(zoom.z_safety[i]) - 1.5).toFixed(1)} ${(plane.py(zoom.z_utility[i]) - 1.5).toFixed(1)}h3v3h-3z`);
    });
    const name = zoom.classes[code];
    if (d.length) plane.layer.append(svg("path", { class: "points", "data-class": name, "data-units": d.length, d: d.join(""),
      fill: umColor(name), "fill-opacity": name === "CU" ? 0.5 : 0.9 }));
  }
  const rows = [["neuron", "label", "z_safety", "z_utility"]];
  zoom.labels.forEach((c, i) => rows.push([i, zoom.classes[c], zoom.z_safety[i] ?? "", zoom.z_utility[i] ?? ""]));
  return figure(plane.root, `unit-map-layer-${zoom.layer}`, rows);
}

// The audit page's unit-map section: returned at once, filled when the arrays arrive.
function unitMapFigures(id, summary, layers) {
  const box = h("div", { id: "unit-map-figures", "data-state": "loading" }, h("p", { class: "muted" }, "Loading the unit map's arrays…"));
  if (!summary.artifact_available) {
    box.dataset.state = "unavailable";
    box.replaceChildren(h("p", { class: "muted" }, "The unit map file is not stored here: no per-unit figures."));
    return box;
  }
  const scu = layers.map((l) => l.neurons?.SCU || 0);
  const asked = new URLSearchParams(location.hash.split("?")[1] || "").get("layer"), chosen = Number(asked);
  const layer = asked !== null && Number.isInteger(chosen) && chosen >= 0 && chosen < layers.length ? chosen : scu.indexOf(Math.max(0, ...scu));
  unitMapLoad(id, box, Math.max(0, layer)).catch((error) => {
    box.dataset.state = "error";
    box.replaceChildren(h("p", { class: "error" }, `unit map figures: ${error.message}`));
  });
  return box;
}

async function unitMapLoad(id, box, layer) {
  const neurons = (l) => api(`/v1/audits/${id}/unit-map/layers/${l}/neurons`).then((r) => r.body);
  const [arrays, zoom] = await Promise.all([api(`/v1/audits/${id}/unit-map/arrays`).then((r) => r.body), neurons(layer)]);
  performance.clearMarks("unitmap-data");
  performance.clearMeasures("unitmap-render");
  performance.mark("unitmap-data");
  const parts = [h("h2", {}, "Every unit: z_S against z_U")];
  if (arrays.density) parts.push(h("p", { class: "muted" }, "Dashed lines: the cuts (SCU: z_S − z_U ≥ ", fmt(arrays.cuts.scu ?? NaN),
    "; UCU: z_S − z_U ≤ ", fmt(arrays.cuts.ucu ?? NaN), "; RU: z_S + z_U ≤ ", fmt(arrays.cuts.ru ?? NaN),
    " among the rest). Neurons in ", arrays.density.bins, "² bins, darker = more units; heads outlined."), umScatter(arrays));
  else parts.push(h("p", { class: "muted" }, "A utility-only map (no safety scores): no z_S to draw."));
  parts.push(h("h2", {}, "Attention heads: layer × head"), h("div", { class: "figure-row" }, umHeadGrid(arrays, "label"),
    arrays.density ? umHeadGrid(arrays, "diff") : ""));
  parts.push(h("h2", {}, "SCU and RU per layer, each on its own scale"), umLayerCounts(arrays));
  const zoomBox = h("div", { class: "zoom-box" });
  const select = h("select", { id: "zoom-layer", onchange: async (event) => {
    const next = await neurons(Number(event.target.value));
    zoomBox.replaceChildren(next.z_safety ? umZoom(next, arrays.cuts) : "");
  } }, Array.from({ length: arrays.layers }, (_, l) => h("option", { value: l, ...(l === layer ? { selected: "" } : {}) }, `layer ${l}`)));
  zoomBox.append(zoom.z_safety ? umZoom(zoom, arrays.cuts) : h("p", { class: "muted" }, "No z_S in this map."));
  parts.push(h("h2", {}, "One layer's neurons"), h("p", {}, "Layer ", select, h("span", { class: "muted" }, " (first shown: the layer with the most SCU neurons)")), zoomBox);
  box.replaceChildren(...parts);
  box.dataset.state = "ready";
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));  // after layout and paint
  const measure = performance.measure("unitmap-render", "unitmap-data");
  box.dataset.renderMs = measure.duration.toFixed(1);
  box.dataset.state = "rendered";
}
