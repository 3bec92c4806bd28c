// Figures of the results pages: downloads (SVG, PNG, CSV) for any figure, the role-transfer flow (Sankey),
// rates with their intervals (ablation comparison) and line charts over checkpoints.
// Loaded before app.js; uses its helpers (h, svg, fmt, pct, CLASSES, COLORS) at call time.
"use strict";

// ---------------------------------------------------------------- downloads
const FIGURE_NS = "http://www.w3.org/2000/svg";
const FIGURE_STYLE = ".axis{font:10px system-ui,sans-serif;fill:#555}text{font-family:system-ui,sans-serif}";

// The figure as a standalone SVG document: its namespace and the page's axis style inlined.
function figureSvg(node) {
  const copy = node.cloneNode(true);
  copy.setAttribute("xmlns", FIGURE_NS);
  const style = document.createElementNS(FIGURE_NS, "style");
  style.textContent = FIGURE_STYLE;
  copy.insertBefore(style, copy.firstChild);
  return new XMLSerializer().serializeToString(copy);
}

function figureSave(blob, filename) {
  const a = h("a", { href: URL.createObjectURL(blob), download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

const figureCsvCell = (v) => (/[",\n]/.test(String(v ?? "")) ? `"${String(v).replace(/"/g, '""')}"` : String(v ?? ""));
const figureCsv = (rows) => rows.map((row) => row.map(figureCsvCell).join(",")).join("\n") + "\n";

async function figurePng(node, scale = 2) {
  const width = Number(node.getAttribute("width")), height = Number(node.getAttribute("height"));
  const image = new Image();
  image.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(figureSvg(node));
  await image.decode();
  const canvas = h("canvas", { width: width * scale, height: height * scale });
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

// A figure with its three downloads; rows: the data drawn, header first (the CSV).
function figure(node, name, rows) {
  const button = (format, label, make) => h("button", { class: "link", "data-format": format, onclick: async () =>
    figureSave(await make(), `${name}.${format}`) }, label);
  return h("figure", { class: "figure", "data-figure": name }, node,
    h("figcaption", { class: "downloads" }, "Download ",
      button("svg", "SVG", async () => new Blob([figureSvg(node)], { type: "image/svg+xml" })), " · ",
      button("png", "PNG", () => figurePng(node)), " · ",
      button("csv", "data (CSV)", async () => new Blob([figureCsv(rows)], { type: "text/csv" }))));
}

// ---------------------------------------------------------------- role transfer as a flow
// Before classes on the left, after classes on the right, one band per non-empty cell of the cross-tab.
// mode "units": band thickness proportional to the count (at least 1 px, so SCU stays visible);
// mode "rows": every before class the same height, its bands its row fractions (where each class went).
function sankey(crosstab, { width = 640, height = 360, mode = "units" } = {}) {
  const classes = crosstab.classes || CLASSES, counts = crosstab.counts;
  const top = 14, bottom = 14, gap = 14, nodeW = 12, left = 110, right = 110;
  const flows = [];
  counts.forEach((row, i) => row.forEach((count, j) => count > 0 && flows.push({ i, j, count })));
  const rowTotals = counts.map((row) => row.reduce((a, b) => a + b, 0));
  const colTotals = classes.map((_, j) => counts.reduce((s, row) => s + (row[j] || 0), 0));
  const weight = (f) => (mode === "rows" ? f.count / rowTotals[f.i] : f.count);
  const total = flows.reduce((s, f) => s + weight(f), 0);
  const used = (totals) => totals.filter((t) => t > 0).length;
  const available = height - top - bottom - gap * (Math.max(used(rowTotals), used(colTotals)) - 1);
  const scale = total ? Math.max(available - flows.length, available / 2) / total : 0;
  for (const f of flows) f.t = Math.max(1, weight(f) * scale);
  const stack = (key, n) => {
    const sizes = Array.from({ length: n }, (_, k) => flows.filter((f) => f[key] === k).reduce((s, f) => s + f.t, 0));
    let y = top;
    return sizes.map((size) => { const y0 = y; if (size > 0) y += size + gap; return { y: y0, size }; });
  };
  const before = stack("i", classes.length), after = stack("j", classes.length);
  const x0 = left + nodeW, x1 = width - right - nodeW, xm = (x0 + x1) / 2;
  const root = svg("svg", { class: "chart sankey", "data-mode": mode, "data-scale": scale, width, height,
    viewBox: `0 0 ${width} ${height}` });
  const outOffset = before.map((n) => n.y), inOffset = after.map((n) => n.y);
  // Bands leave each before node in after-class order and enter each after node in before-class order.
  const byTarget = [...flows].sort((a, b) => a.i - b.i || a.j - b.j);
  const entry = new Map();
  for (const f of [...flows].sort((a, b) => a.j - b.j || a.i - b.i)) { entry.set(f, inOffset[f.j]); inOffset[f.j] += f.t; }
  for (const f of byTarget) {
    const ya = outOffset[f.i], yb = entry.get(f);
    outOffset[f.i] += f.t;
    const d = `M${x0},${ya.toFixed(2)} C${xm},${ya.toFixed(2)} ${xm},${yb.toFixed(2)} ${x1},${yb.toFixed(2)} ` +
      `L${x1},${(yb + f.t).toFixed(2)} C${xm},${(yb + f.t).toFixed(2)} ${xm},${(ya + f.t).toFixed(2)} ${x0},${(ya + f.t).toFixed(2)} Z`;
    const share = rowTotals[f.i] ? f.count / rowTotals[f.i] : 0;
    root.append(svg("path", { class: "flow", d, fill: COLORS[classes[f.i]] || "#999", "fill-opacity": 0.45,
      stroke: COLORS[classes[f.i]] || "#999", "stroke-opacity": 0.6, "stroke-width": 0.5,
      "data-from": classes[f.i], "data-to": classes[f.j], "data-count": f.count, "data-thickness": f.t.toFixed(3) },
    svg("title", {}, `${classes[f.i]} → ${classes[f.j]}: ${f.count} units (${(100 * share).toFixed(1)} % of ${classes[f.i]})`)));
  }
  const node = (side, k, place, count, x, anchor, tx) => {
    if (!place.size) return;
    root.append(svg("rect", { class: "node", "data-side": side, "data-class": classes[k], "data-count": count, x, y: place.y,
      width: nodeW, height: place.size, fill: COLORS[classes[k]] || "#999" }, svg("title", {}, `${classes[k]} ${side}: ${count}`)),
    svg("text", { x: tx, y: place.y + place.size / 2 + 4, class: "axis", "text-anchor": anchor }, `${classes[k]} ${count}`));
  };
  classes.forEach((_, k) => {
    node("before", k, before[k], rowTotals[k], left, "end", left - 6);
    node("after", k, after[k], colTotals[k], width - right - nodeW, "start", width - right + 6);
  });
  root.append(svg("text", { x: left, y: 10, class: "axis", "text-anchor": "end" }, "before"),
    svg("text", { x: width - right, y: 10, class: "axis" }, "after"));
  return root;
}

function crosstabCsv(crosstab) {
  const classes = crosstab.classes || CLASSES;
  return [["before", "after", "units"], ...crosstab.counts.flatMap((row, i) => row.map((count, j) => [classes[i], classes[j], count]))];
}

// The flow with a switch between unit counts and row shares, and its downloads.
function transferFlow(crosstab, name) {
  const holder = h("div", { class: "sankey-holder" });
  const draw = (mode) => holder.replaceChildren(figure(sankey(crosstab, { mode }), name, crosstabCsv(crosstab)));
  const select = h("select", { class: "sankey-mode", onchange: (e) => draw(e.target.value) },
    h("option", { value: "units" }, "band width: units"), h("option", { value: "rows" }, "band width: share of the class before"));
  draw("units");
  return h("div", { class: "transfer-flow" }, h("p", {}, select), holder);
}

// ---------------------------------------------------------------- rates with intervals
const CONDITION_COLORS = { system: "#1f77b4", no_system: "#ff7f0e", suffix: "#9467bd" };

// rows: [{ label, points: [{ condition, rate, ci95: [low, high], k, n }], range: [low, high] | null }];
// one line per row, a dot per condition with its 95 % interval; range: a control's seeds (grey band).
function intervalChart(rows, { title = "", width = 760 } = {}) {
  const rowH = 24, top = 34, bottom = 22, left = 260, right = 20, plotW = width - left - right;
  const height = top + bottom + rowH * Math.max(rows.length, 1);
  const sx = (v) => left + plotW * v;
  const root = svg("svg", { class: "chart intervals", "data-title": title, "data-left": left, "data-plot-width": plotW,
    width, height, viewBox: `0 0 ${width} ${height}` }, svg("text", { x: 4, y: 12, class: "axis" }, title));
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) root.append(
    svg("line", { x1: sx(tick), x2: sx(tick), y1: top - 6, y2: height - bottom, stroke: "#eee" }),
    svg("text", { x: sx(tick), y: height - 6, class: "axis", "text-anchor": "middle" }, `${100 * tick} %`));
  const conditions = [...new Set(rows.flatMap((r) => r.points.map((p) => p.condition)))];
  conditions.forEach((c, i) => root.append(svg("circle", { cx: left + 130 * i + 4, cy: 22, r: 3.5, fill: CONDITION_COLORS[c] || "#333" }),
    svg("text", { x: left + 130 * i + 11, y: 26, class: "axis" }, c)));
  rows.forEach((row, r) => {
    const y = top + rowH * (r + 0.5);
    const g = svg("g", { class: "interval-row", "data-label": row.label });
    g.append(svg("text", { x: left - 8, y: y + 4, class: "axis", "text-anchor": "end" }, row.label));
    if (row.range) g.append(svg("rect", { class: "range", x: sx(row.range[0]), y: y - 9, height: 18, fill: "#ddd",
      width: Math.max(1, sx(row.range[1]) - sx(row.range[0])), "data-low": row.range[0], "data-high": row.range[1] },
    svg("title", {}, `mean over seeds ranges ${pct(row.range[0])} to ${pct(row.range[1])}`)));
    row.points.forEach((p, c) => {
      const yy = y + (c - (row.points.length - 1) / 2) * 7, color = CONDITION_COLORS[p.condition] || "#333";
      const [low, high] = p.ci95;
      g.append(svg("g", { class: "interval", "data-condition": p.condition, "data-rate": p.rate, "data-low": low, "data-high": high },
        svg("line", { class: "bar", x1: sx(low), x2: sx(high), y1: yy, y2: yy, stroke: color, "stroke-width": 1.5 }),
        svg("line", { x1: sx(low), x2: sx(low), y1: yy - 3, y2: yy + 3, stroke: color }),
        svg("line", { x1: sx(high), x2: sx(high), y1: yy - 3, y2: yy + 3, stroke: color }),
        svg("circle", { class: "rate", cx: sx(p.rate), cy: yy, r: 3.5, fill: color }),
        svg("title", {}, `${row.label}, ${p.condition}: ${pct(p.rate)} [${pct(low)}, ${pct(high)}]` +
          (p.n != null ? ` (${p.k} of ${p.n})` : ""))));
    });
    root.append(g);
  });
  return root;
}

// ---------------------------------------------------------------- line charts over checkpoints
// xs: the checkpoint values (numbers, or strings placed in order); series: [{ name, values, color }], null = gap.
function pointsChart(xs, series, { title = "", width = 440, height = 200, format = fmt, from0 = true } = {}) {
  const left = 52, right = 12, top = 24, bottom = 26, plotW = width - left - right, plotH = height - top - bottom;
  const numeric = xs.every((x) => x !== "" && Number.isFinite(Number(x)));
  const pos = numeric ? xs.map(Number) : xs.map((_, i) => i);
  const [a, b] = [Math.min(...pos), Math.max(...pos)];
  const ys = series.flatMap((s) => s.values).filter((v) => v != null);
  const lo = from0 ? Math.min(0, ...ys) : Math.min(...ys), hi = Math.max(lo + 1e-12, ...ys);
  const sx = (i) => left + plotW * (b > a ? (pos[i] - a) / (b - a) : 0.5), sy = (v) => top + plotH * (1 - (v - lo) / (hi - lo));
  const root = svg("svg", { class: "chart points", "data-title": title, width, height, viewBox: `0 0 ${width} ${height}` },
    svg("text", { x: 4, y: 12, class: "axis" }, title), svg("text", { x: 4, y: top + 8, class: "axis" }, format(hi)),
    svg("text", { x: 4, y: top + plotH, class: "axis" }, format(lo)),
    svg("line", { x1: left, x2: width - right, y1: top + plotH, y2: top + plotH, stroke: "#888" }));
  xs.forEach((x, i) => (xs.length <= 12 || i % Math.ceil(xs.length / 12) === 0) &&
    root.append(svg("text", { x: sx(i), y: height - 8, class: "axis", "text-anchor": "middle" }, x)));
  series.forEach((s, n) => {
    const present = s.values.map((v, i) => [i, v]).filter(([, v]) => v != null);
    root.append(svg("polyline", { class: "line", "data-series": s.name, fill: "none", stroke: s.color, "stroke-width": 1.5,
      "stroke-dasharray": s.dashed ? "4 3" : "none", points: present.map(([i, v]) => `${sx(i).toFixed(1)},${sy(v).toFixed(1)}`).join(" ") }));
    for (const [i, v] of present) root.append(svg("circle", { class: "point", "data-series": s.name, "data-x": xs[i], "data-y": v,
      cx: sx(i).toFixed(1), cy: sy(v).toFixed(1), r: 3, fill: s.color }, svg("title", {}, `${s.name} at ${xs[i]}: ${format(v)}`)));
    if (series.length > 1) root.append(svg("text", { x: left + 8 + 110 * n, y: top + 4, class: "axis", fill: s.color }, s.name));
  });
  return root;
}
