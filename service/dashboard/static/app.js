// SSAH Audit dashboard: one page app over the /v1 API. No framework, no build step.
// Sections: API client · DOM helpers · SVG charts · pages (jobs, audit, evaluation, finetune, comparison) · router.
"use strict";

// ---------------------------------------------------------------- API client
const KEY_STORAGE = "ssah.apiKey";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const CLASSES = ["SCU", "UCU", "CU", "RU"];
const COLORS = { SCU: "#d62728", UCU: "#1f77b4", CU: "#c7c7c7", RU: "#2ca02c" };

class ApiError extends Error {}

async function api(path, { etag = null, raw = false } = {}) {
  const headers = { Authorization: "Bearer " + (localStorage.getItem(KEY_STORAGE) || "") };
  if (etag) headers["If-None-Match"] = etag;
  // no-store: our own If-None-Match decides, so a 304 reaches this code instead of the HTTP cache.
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 304) return { status: 304, etag };
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new ApiError(`${response.status} ${problem.detail || problem.title || response.statusText}`);
  }
  const body = raw ? await response.blob() : await response.json();
  return { status: response.status, etag: response.headers.get("ETag"), body };
}

async function allPages(path) {
  const items = [];
  for (let next = path; next; ) {
    const { body } = await api(next);
    items.push(...body.items);
    next = body.next;
  }
  return items;
}

// ---------------------------------------------------------------- DOM helpers
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  node.append(...children.flat().map((c) => (c instanceof Node ? c : document.createTextNode(String(c ?? "")))));
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children.map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return node;
}

const fmt = (v) => (typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(4) : String(v ?? ""));
const pct = (v) => (100 * v).toFixed(2) + " %";
const shortId = (id) => id.slice(0, 8);

function table(header, rows, attrs = {}) {
  return h("table", attrs, h("thead", {}, h("tr", {}, header.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((row) => (row instanceof Node ? row : h("tr", {}, row.map((c) => h("td", {}, c)))))));
}

function flatten(value, prefix = "", out = {}) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (typeof value === "number") out[prefix] = value;
  return out;
}

function downloadButton(label, path, filename) {
  return h("button", { class: "link", onclick: async () => {
    const { body } = await api(path, { raw: true });
    const a = h("a", { href: URL.createObjectURL(body), download: filename });
    a.click();
    URL.revokeObjectURL(a.href);
  } }, label);
}

function legend() {
  return h("div", { class: "legend" }, CLASSES.map((c) => h("span", {}, h("i", { style: `background:${COLORS[c]}` }), c)));
}

// ---------------------------------------------------------------- SVG charts
function stackedBars(layers, part, width = 900, height = 220) {
  const left = 48, bottom = 24, top = 8, plotW = width - left - 8, plotH = height - bottom - top;
  const totals = layers.map((l) => CLASSES.reduce((s, c) => s + (l[part][c] || 0), 0));
  const max = Math.max(1, ...totals);
  const step = plotW / Math.max(layers.length, 1), barW = Math.max(step * 0.8, 1);
  const root = svg("svg", { class: "chart stacked", "data-part": part, width, height, viewBox: `0 0 ${width} ${height}` },
    svg("text", { x: 4, y: top + 10, class: "axis" }, max), svg("text", { x: 4, y: top + plotH, class: "axis" }, 0));
  layers.forEach((layer, i) => {
    const x = left + i * step + (step - barW) / 2;
    const g = svg("g", { class: "bar", "data-layer": layer.layer ?? i });
    let y = top + plotH;
    for (const c of CLASSES) {
      const count = layer[part][c] || 0, barH = (plotH * count) / max;
      g.setAttribute("data-" + c.toLowerCase(), count);
      y -= barH;
      if (barH > 0) g.append(svg("rect", { x, y, width: barW, height: barH, fill: COLORS[c] }));
    }
    g.append(svg("title", {}, `layer ${layer.layer ?? i}: ` + CLASSES.map((c) => `${c} ${layer[part][c] || 0}`).join(", ")));
    root.append(g);
    if (layers.length <= 40 || i % 5 === 0)
      root.append(svg("text", { x: x + barW / 2, y: height - 8, class: "axis", "text-anchor": "middle" }, layer.layer ?? i));
  });
  return root;
}

// series: [{ name, points, color }] drawn over the loss on a second, shared scale labelled on the right
// (the refusal margins a fine-tune tracked); each polyline carries its name as class and data-series.
function lineChart(points, width = 900, height = 240, series = []) {
  if (!points.length) return h("p", { class: "muted" }, "no loss recorded");
  const extra = series.filter((s) => s.points.length);
  const left = 56, bottom = 28, top = 10, right = extra.length ? 56 : 10, plotW = width - left - right, plotH = height - top - bottom;
  const xs = [...points, ...extra.flatMap((s) => s.points)].map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => left + plotW * (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5);
  const scale = (lo, hi) => (y) => top + plotH * (1 - (hi > lo ? (y - lo) / (hi - lo) : 0.5));
  const line = (pts, sy) => pts.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
  const root = svg("svg", { class: "chart line", "data-points": points.length, width, height, viewBox: `0 0 ${width} ${height}` },
    svg("text", { x: 4, y: top + 10, class: "axis" }, fmt(y1)), svg("text", { x: 4, y: top + plotH, class: "axis" }, fmt(y0)),
    svg("text", { x: left, y: height - 8, class: "axis" }, x0),
    svg("text", { x: width - right, y: height - 8, class: "axis", "text-anchor": "end" }, `${x1} steps`),
    svg("polyline", { fill: "none", stroke: "#1f77b4", "stroke-width": 1.5, points: line(points, scale(y0, y1)) }));
  if (extra.length) {
    const ms = extra.flatMap((s) => s.points.map((p) => p[1])), [m0, m1] = [Math.min(...ms), Math.max(...ms)];
    root.append(svg("text", { x: width - right + 4, y: top + 10, class: "axis" }, fmt(m1)),
      svg("text", { x: width - right + 4, y: top + plotH, class: "axis" }, fmt(m0)));
    extra.forEach((s, i) => root.append(
      svg("polyline", { class: `series ${s.name}`, "data-series": s.name, "data-points": s.points.length, fill: "none",
        stroke: s.color, "stroke-width": 1.5, points: line(s.points, scale(m0, m1)) }),
      svg("text", { x: left + 8 + 180 * i, y: top + 12, class: "axis", fill: s.color }, `${s.name} (margin, right)`)));
  }
  return root;
}

// The margins a fine-tune tracked (--track-refusal), step 0 first, as lineChart series.
function refusalSeries(steps, baseline) {
  return [["refusal_margin", "refusal-margin", "#d62728"], ["over_refusal_margin", "over-refusal-margin", "#2ca02c"]]
    .map(([key, name, color]) => ({ name, color, points: [
      ...(baseline && baseline[key] != null ? [[0, baseline[key]]] : []),
      ...steps.filter((s) => s[key] != null).map((s) => [s.step, s[key]])] }));
}

function heatmap(crosstab) {
  const classes = crosstab.classes || CLASSES;
  const rows = crosstab.counts.map((row, i) => {
    const total = Math.max(1, row.reduce((a, b) => a + b, 0));
    return h("tr", {}, h("th", {}, classes[i]), row.map((count) => h("td",
      { "data-count": count, style: `background:rgba(214,39,40,${(0.08 + 0.85 * count / total).toFixed(2)})` },
      `${count} (${(100 * count / total).toFixed(1)}%)`)));
  });
  return table(["before \\ after", ...classes], rows, { class: "heatmap" });
}

// ---------------------------------------------------------------- pages
const page = () => document.getElementById("page");
let pollTimer = null;

function jobLink(job) {
  return h("a", { href: `#/${job.kind}/${job.id}` }, shortId(job.id));
}

function jobRow(job) {
  return h("tr", { id: `job-${job.id}`, "data-status": job.status },
    h("td", { class: "left" }, jobLink(job)), h("td", { class: "left" }, job.kind),
    h("td", { class: `left status status-${job.status}` }, job.status),
    h("td", {}, h("progress", { max: 1, value: job.progress }), ` ${Math.round(100 * job.progress)}%`),
    h("td", { class: "left" }, job.progress_message || job.error || ""),
    h("td", { class: "left" }, new Date(job.created_at).toLocaleString()));
}

async function showJobs() {
  const jobs = (await api("/v1/jobs?limit=100")).body.items;
  const etags = new Map();
  page().replaceChildren(h("h1", {}, "Jobs"),
    jobs.length ? table(["job", "kind", "status", "progress", "message", "created"], jobs.map(jobRow), { id: "jobs" })
      : h("p", { class: "muted" }, "No jobs yet."));
  // Poll each unfinished job; an unchanged one costs a 304 with no body.
  pollTimer = setInterval(async () => {
    for (const job of jobs.filter((j) => !TERMINAL.has(j.status))) {
      const result = await api(`/v1/jobs/${job.id}`, { etag: etags.get(job.id) });
      if (result.status === 304) continue;
      etags.set(job.id, result.etag);
      Object.assign(job, result.body);
      document.getElementById(`job-${job.id}`)?.replaceWith(jobRow(job));
    }
  }, 1000);
}

function jobHeader(job, title) {
  return [h("h1", {}, `${title} ${shortId(job.id)}`),
    h("p", {}, "Status ", h("span", { class: `status status-${job.status}`, id: "job-status" }, job.status),
      job.error ? h("span", { class: "error" }, ` — ${job.error}`) : "", h("span", { class: "muted" }, ` · created ${new Date(job.created_at).toLocaleString()}`))];
}

function scoresTable(scores) {
  const rows = [];
  for (const score of scores) {
    for (const part of ["safety", "utility"])
      for (const [k, v] of Object.entries(flatten(score.metrics[part] || {})))
        rows.push([`${part}.${k}`, fmt(v), h("code", { class: "protocol-hash" }, score.protocol_hash.slice(0, 12))]);
  }
  return rows.length ? table(["metric", "value", "protocol"], rows, { class: "scores" }) : h("p", { class: "muted" }, "No scores.");
}

async function showAudit(id) {
  const job = (await api(`/v1/audits/${id}`)).body;
  const parts = jobHeader(job, "Audit");
  if (job.status === "succeeded") {
    const summary = (await api(`/v1/audits/${id}/unit-map`)).body;
    const layers = await allPages(`/v1/audits/${id}/unit-map/layers?limit=200`);
    parts.push(h("h2", {}, "Classes"), table(["class", "units", "heads", "neurons", "% of units", "% of parameters"],
      CLASSES.filter((name) => summary.classes[name]).map((name) => [name, summary.classes[name]]).map(([name, c]) => [name, c.units, c.heads, c.neurons, pct(c.unit_fraction), pct(c.param_fraction)]),
      { id: "classes" }));
    parts.push(h("h2", {}, "Attention heads per layer"), legend(), stackedBars(layers, "heads"));
    parts.push(h("h2", {}, "MLP neurons per layer"), legend(), stackedBars(layers, "neurons"));
    parts.push(unitMapFigures(id, summary, layers));  // unitmap.js: filled when the unit map's arrays arrive
    parts.push(h("h2", {}, "Downloads"), h("p", {}, downloadButton("summary (JSON)", `/v1/audits/${id}/unit-map`, `unit-map-${shortId(id)}.json`),
      summary.artifact_available ? [" · ", downloadButton("unit map file", `/v1/audits/${id}/unit-map/artifact`, `unit-map-${shortId(id)}.safetensors`)] : ""));
    // Scores of the evaluations that ablated this audit's units, or scored the same model.
    const evaluations = (await api("/v1/evaluations?status=succeeded&limit=200")).body.items
      .filter((e) => e.params.audit_id === id || (job.model_id && e.model_id === job.model_id));
    parts.push(h("h2", {}, "Evaluations"));
    if (!evaluations.length) parts.push(h("p", { class: "muted" }, "No succeeded evaluation of this model."));
    const scored = [], ablationAt = parts.length;
    for (const evaluation of evaluations) {
      const scores = (await api(`/v1/evaluations/${evaluation.id}/scores`)).body;
      scored.push(...scores.map((score) => ({ evaluation, score })));
      parts.push(h("h3", {}, h("a", { href: `#/evaluation/${evaluation.id}` }, `Evaluation ${shortId(evaluation.id)}`),
        evaluation.params.ablate ? ` (minus ${evaluation.params.ablate})` : " (dense)"), scoresTable(scores));
    }
    parts.splice(ablationAt, 0, ...ablationSection(scored));  // results.js
  }
  page().replaceChildren(...parts);
}

async function showEvaluation(id) {
  const job = (await api(`/v1/evaluations/${id}`)).body;
  const parts = jobHeader(job, "Evaluation");
  if (job.status === "succeeded") {
    const scores = (await api(`/v1/evaluations/${id}/scores`)).body;
    parts.push(h("h2", {}, "Scores"), ...scores.map((s) => h("p", {}, "Protocol hash ", h("code", { class: "protocol-hash" }, s.protocol_hash))),
      scoresTable(scores), h("p", {}, downloadButton("scores (JSON)", `/v1/evaluations/${id}/scores`, `scores-${shortId(id)}.json`),
        " · ", downloadButton("every prompt's answer and verdict (JSON)", `/v1/evaluations/${id}/result`, `evaluation-${shortId(id)}.json`)));
  }
  page().replaceChildren(...parts);
}

async function showFinetune(id) {
  const job = (await api(`/v1/finetunes/${id}`)).body;
  const parts = jobHeader(job, "Fine-tune");
  if (job.status === "succeeded") {
    const result = (await api(`/v1/finetunes/${id}/result`)).body;
    const steps = result.loss_curve.steps || [];
    const track = result.loss_curve.refusal_track;
    parts.push(h("h2", {}, track ? "Training loss and refusal margins" : "Training loss"),
      lineChart(steps.filter((s) => s.loss != null).map((s) => [s.step, s.loss]), 900, 240, refusalSeries(steps, track?.baseline)));
    if (track?.stop) parts.push(h("p", { class: "stop" },
      `Stopped at step ${track.stop.step}: refusal margin ${fmt(track.stop.refusal_margin)} below ${fmt(track.stop.threshold)}.`));
    const evaluation = result.loss_curve.evaluation || {};
    const before = flatten({ safety: evaluation.before?.safety, utility: evaluation.before?.utility });
    const after = flatten({ safety: evaluation.after?.safety, utility: evaluation.after?.utility });
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
    parts.push(h("h2", {}, "Scores before and after"), keys.length
      ? table(["metric", "before", "after", "change"], keys.map((k) => [k, fmt(before[k]), fmt(after[k]),
        k in before && k in after ? fmt(after[k] - before[k]) : ""]), { class: "before-after" })
      : h("p", { class: "muted" }, "The fine-tune was not evaluated."));
    parts.push(h("h2", {}, "Downloads"), h("p", {}, downloadButton("result (JSON)", `/v1/finetunes/${id}/result`, `finetune-${shortId(id)}.json`),
      result.output_model_uri ? [" · ", downloadButton("model (tar)", `/v1/finetunes/${id}/model`, `finetune-${shortId(id)}.tar`),
        h("span", { class: "muted" }, ` · register it as the model source ${result.output_model_source}`)] : ""));
  }
  page().replaceChildren(...parts);
}

async function showComparison(id) {
  const job = (await api(`/v1/comparisons/${id}`)).body;
  const parts = jobHeader(job, "Comparison");
  parts.push(h("p", {}, "Before ", h("a", { href: `#/audit/${job.params.before_audit_id}` }, shortId(job.params.before_audit_id || "")),
    " → after ", h("a", { href: `#/audit/${job.params.after_audit_id}` }, shortId(job.params.after_audit_id || ""))));
  if (job.status === "succeeded") {
    const { crosstab } = (await api(`/v1/comparisons/${id}/result`)).body;
    parts.push(h("h2", {}, "Role transfer"), heatmap(crosstab));
    if (crosstab.unchanged_fraction != null) parts.push(h("p", {}, `${pct(crosstab.unchanged_fraction)} of units kept their class.`));
    parts.push(...transferSection(crosstab, id));  // results.js
  }
  page().replaceChildren(...parts);
}

// ---------------------------------------------------------------- router and key
const ROUTES = { audit: showAudit, evaluation: showEvaluation, finetune: showFinetune, comparison: showComparison,
  probe: (id) => showProbe(id), series: () => showSeries(), compare: () => showCompare() };  // probe.js, results.js

async function route() {
  clearInterval(pollTimer);
  if (!localStorage.getItem(KEY_STORAGE)) {
    page().replaceChildren(h("p", {}, "Enter an API key above (create one with ", h("code", {}, "ssah keys create"), ")."));
    return;
  }
  const [, kind, id] = location.hash.split("?")[0].split("/");
  try {
    await (ROUTES[kind] ? ROUTES[kind](id) : showJobs());
  } catch (error) {
    page().replaceChildren(h("p", { class: "error", id: "error" }, error.message));
  }
}

document.getElementById("key").value = localStorage.getItem(KEY_STORAGE) || "";
document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem(KEY_STORAGE, document.getElementById("key").value.trim());
  route();
});
window.addEventListener("hashchange", route);
route();
