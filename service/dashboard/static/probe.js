// Probe page: the paper's per-layer distance curves per k (this model solid, a compared probe dashed),
// the gap |d_refusal - d_compliance|, and how much each unit class writes along the refusal direction.
// Loaded before app.js; uses its helpers (h, svg, api, table, fmt, pct, jobHeader, legend) at call time.
"use strict";

const K_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

// curves: [{ name, values, color, dashed }] over layers; one svg, shared y scale from 0.
function layerCurves(curves, { width = 440, height = 220, label = "", max: fixed = null } = {}) {
  const left = 40, bottom = 24, top = 18, plotW = width - left - 8, plotH = height - top - bottom;
  const layers = Math.max(1, ...curves.map((c) => c.values.length));
  const max = fixed ?? Math.max(1e-9, ...curves.flatMap((c) => c.values));
  const sx = (i) => left + plotW * (layers > 1 ? i / (layers - 1) : 0.5), sy = (v) => top + plotH * (1 - v / max);
  const root = svg("svg", { class: "chart curves", "data-label": label, "data-curves": curves.length, width, height,
    viewBox: `0 0 ${width} ${height}` },
  svg("text", { x: left, y: 12, class: "axis" }, label), svg("text", { x: 4, y: top + 8, class: "axis" }, fmt(max)),
  svg("text", { x: 4, y: top + plotH, class: "axis" }, 0), svg("text", { x: left, y: height - 6, class: "axis" }, "layer 0"),
  svg("text", { x: width - 8, y: height - 6, class: "axis", "text-anchor": "end" }, `layer ${layers - 1}`));
  for (const c of curves) root.append(svg("polyline", { class: "curve", "data-name": c.name, "data-points": c.values.length,
    fill: "none", stroke: c.color, "stroke-width": 1.5, "stroke-dasharray": c.dashed ? "4 3" : "none",
    points: c.values.map((v, i) => `${sx(i).toFixed(1)},${sy(v).toFixed(1)}`).join(" ") }, svg("title", {}, c.name)));
  return root;
}

function curvesFor(kind, summary, other) {
  const ks = Object.keys(summary.distances[kind]);
  const curves = ks.map((k, i) => ({ name: `k=${k}`, values: summary.distances[kind][k], color: K_COLORS[i % K_COLORS.length] }));
  if (other) ks.filter((k) => other.distances[kind][k]).forEach((k, i) => curves.push(
    { name: `compare k=${k}`, values: other.distances[kind][k], color: K_COLORS[i % K_COLORS.length], dashed: true }));
  return curves;
}

// Distance against the prefix length k at one layer: refusal and compliance prefixes, a compared probe dashed.
function prefixCurves(summary, other, layer) {
  const ks = Object.keys(summary.distances.refusal).map(Number).sort((a, b) => a - b);
  const at = (s, kind) => ks.map((k) => s.distances[kind][k]?.[layer] ?? null);
  const series = [{ name: "refusal", values: at(summary, "refusal"), color: "#d62728" },
    { name: "compliance", values: at(summary, "compliance"), color: "#2ca02c" }];
  if (other) series.push({ name: "compare refusal", values: at(other, "refusal"), color: "#d62728", dashed: true },
    { name: "compare compliance", values: at(other, "compliance"), color: "#2ca02c", dashed: true });
  const rows = [["k", ...series.map((s) => `${s.name} (layer ${layer})`)], ...ks.map((k, i) => [k, ...series.map((s) => s.values[i] ?? "")])];
  return figure(pointsChart(ks, series, { title: `cosine distance at layer ${layer} by prefix length k`, width: 900 }),
    `probe-prefix-layer-${layer}`, rows);
}

// Per-layer distances of one probe as CSV rows: kind, k, layer, distance.
const distanceRows = (summary, kinds) => [["kind", "k", "layer", "distance"], ...kinds.flatMap((kind) =>
  Object.entries(summary.distances[kind]).flatMap(([k, values]) => values.map((v, layer) => [kind, k, layer, v])))];

// This probe and the compared one next to each other, each kind on one shared scale.
function sideBySide(summary, other) {
  return ["refusal", "compliance"].map((kind) => {
    const max = Math.max(1e-9, ...[summary, other].flatMap((s) => Object.values(s.distances[kind]).flat()));
    const panel = (s, who) => figure(layerCurves(curvesFor(kind, s, null), { label: `${who}: query + k ${kind} tokens`, max }),
      `probe-${who}-${kind}`, distanceRows(s, [kind]));
    return h("div", { class: "curve-pair side-by-side", "data-kind": kind }, panel(summary, "this"), panel(other, "compared"));
  });
}

// One histogram of the unit scores per class, with its matched random control as an outline.
function writeHistograms(writes, width = 210, height = 120) {
  const bins = writes.edges.length - 1;
  return h("div", { class: "histograms" }, CLASSES.filter((c) => writes.classes?.[c]).map((c) => {
    const counts = writes.classes[c].histogram, control = writes.random?.[c]?.histogram || [];
    const max = Math.max(1, ...counts, ...control), barW = (width - 8) / bins, plotH = height - 30;
    const root = svg("svg", { class: "chart histogram", "data-class": c, "data-units": writes.classes[c].units, width, height,
      viewBox: `0 0 ${width} ${height}` }, svg("text", { x: 4, y: 12, class: "axis" }, `${c} (${writes.classes[c].units} units)`));
    counts.forEach((n, i) => n && root.append(svg("rect", { x: 4 + i * barW, y: 18 + plotH * (1 - n / max), width: barW * 0.9,
      height: plotH * n / max, fill: COLORS[c] })));
    if (control.length) root.append(svg("polyline", { class: "control", fill: "none", stroke: "#333", "stroke-width": 1,
      points: control.map((n, i) => `${(4 + (i + 0.5) * barW).toFixed(1)},${(18 + plotH * (1 - n / max)).toFixed(1)}`).join(" ") }));
    root.append(svg("text", { x: 4, y: height - 2, class: "axis" }, fmt(writes.edges[0])),
      svg("text", { x: width - 4, y: height - 2, class: "axis", "text-anchor": "end" }, fmt(writes.edges[bins])));
    return root;
  }));
}

function writeTable(writes) {
  const rows = CLASSES.filter((c) => writes.classes?.[c]).map((c) => {
    const s = writes.classes[c], r = writes.random?.[c] || {};
    return [c, s.units, fmt(s.cosine_mean), fmt(r.cosine_mean), pct(s.write_share ?? 0), r.write_share == null ? "" : pct(r.write_share)];
  });
  return table(["class", "units", "mean score", "random: mean score", "share of the write", "random: share"], rows, { class: "writes" });
}

async function showProbe(id) {
  const job = (await api(`/v1/probes/${id}`)).body;
  const parts = jobHeader(job, "Probe");
  if (job.status !== "succeeded") return page().replaceChildren(...parts);
  const { summary } = (await api(`/v1/probes/${id}/result`)).body;
  const others = (await api("/v1/probes?status=succeeded&limit=100")).body.items.filter((p) => p.id !== id);
  const chosen = new URLSearchParams(location.hash.split("?")[1] || "").get("compare");
  const other = chosen ? (await api(`/v1/probes/${chosen}/result`)).body.summary : null;
  const select = h("select", { id: "compare", onchange: (e) => { location.hash = `#/probe/${id}` + (e.target.value ? `?compare=${e.target.value}` : ""); } },
    h("option", { value: "" }, "— none —"), others.map((p) => h("option", { value: p.id, ...(p.id === chosen ? { selected: "" } : {}) },
      `${p.id.slice(0, 8)} (${new Date(p.created_at).toLocaleString()})`)));
  const direction = summary.direction;
  parts.push(h("p", {}, `${summary.queries} harmful queries, ${summary.model.layers} layers, pool ${summary.config.pool}. `,
    `Refusal direction at layer ${direction.layer} (held-out accuracy ${fmt(direction.accuracy[direction.layer])}).`),
  h("p", {}, "Compare with probe ", select, other ? h("span", { class: "muted" }, " (dashed)") : ""),
  h("h2", {}, "Cosine distance from the query's state, per layer"),
  h("div", { class: "curve-pair" }, figure(layerCurves(curvesFor("refusal", summary, other), { label: "query + k refusal tokens" }),
    "probe-refusal", distanceRows(summary, ["refusal"])),
  figure(layerCurves(curvesFor("compliance", summary, other), { label: "query + k compliance tokens" }),
    "probe-compliance", distanceRows(summary, ["compliance"]))),
  ...(other ? [h("h2", {}, "Side by side: this probe and the compared one (same scale)"), ...sideBySide(summary, other)] : []),
  h("h2", {}, "Distance per prefix length"), h("p", {}, "at layer ", h("select", { id: "prefix-layer", onchange: (e) =>
    document.getElementById("prefix-curves").replaceChildren(prefixCurves(summary, other, Number(e.target.value))) },
  Array.from({ length: summary.model.layers }, (_, l) => h("option", { value: l, ...(l === direction.layer ? { selected: "" } : {}) }, l)))),
  h("div", { id: "prefix-curves" }, prefixCurves(summary, other, direction.layer)),
  h("h2", {}, "Gap |d(refusal) − d(compliance)|"), figure(layerCurves(curvesFor("gap", summary, other), { width: 900, label: "gap" }),
    "probe-gap", distanceRows(summary, ["gap"])),
  h("h2", {}, "Refusal direction: held-out separation per layer"),
  layerCurves([{ name: "separation", values: direction.separation.map((v) => Math.max(0, v)), color: "#d62728" }], { width: 900, label: "separation" }));
  const writes = summary.unit_writes;
  if (writes.classes) parts.push(h("h2", {}, "Unit writes along the refusal direction, by class (outline: matched random units)"),
    legend(), writeHistograms(writes), writeTable(writes));
  parts.push(h("h2", {}, "Downloads"), h("p", {}, downloadButton("result (JSON)", `/v1/probes/${id}/result`, `probe-${id.slice(0, 8)}.json`),
    " · ", downloadButton("direction files (zip)", `/v1/probes/${id}/direction`, `probe-${id.slice(0, 8)}.zip`)));
  page().replaceChildren(...parts);
}
