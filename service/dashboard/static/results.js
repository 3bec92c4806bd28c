// Results across jobs: the ablation comparison of one model's evaluations (audit page), the checkpoint
// series view (#/series) and two audits side by side (#/compare). Figures come from figures.js.
// Loaded before app.js; uses its helpers (api, allPages, h, table, fmt, pct, heatmap, page, shortId) at call time.
"use strict";

async function apiPost(path, body) {
  const response = await fetch(path, { method: "POST", cache: "no-store", body: JSON.stringify(body),
    headers: { Authorization: "Bearer " + (localStorage.getItem(KEY_STORAGE) || ""), "Content-Type": "application/json" } });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(`${response.status} ${answer.detail || answer.title || response.statusText}`);
  return answer;
}

const resultsParams = () => new URLSearchParams(location.hash.split("?")[1] || "");

// ---------------------------------------------------------------- ablation comparison
// The arm of one evaluation's stored ablation spec, in the paper's order: dense, minus SCU, its random control, ...
function ablationArm(ablation) {
  if (!ablation) return "dense";
  const names = (ablation.classes || []).join("+");
  return ablation.control ? `random matched to ${names}` : `minus ${names}`;
}
const ARM_ORDER = ["dense", "minus SCU", "random matched to SCU", "minus RU", "random matched to RU", "minus UCU",
  "random matched to UCU", "minus CU", "random matched to CU"];
const armRank = (arm) => (ARM_ORDER.includes(arm) ? ARM_ORDER.indexOf(arm) : ARM_ORDER.length);

// One entry per stored score that carries Wilson intervals: [{ id, format, compensation, arm, seed, label, asr, openings }].
function ablationEntries(scored) {
  const entries = [];
  for (const { evaluation, score } of scored) {
    const safety = score.metrics?.safety || {}, ablation = score.metrics?.ablation || null;
    const asr = safety.intervals?.[safety.refusal_list]?.asr;
    if (!asr) continue;  // scored before intervals were stored
    const compensation = ablation ? ablation.compensation || "none" : null;
    const arm = ablationArm(ablation);
    entries.push({ id: evaluation.id, format: safety.prompt_format || score.metrics.protocol?.settings?.prompt_format || "?",
      compensation, arm, seed: ablation?.control ? ablation.seed : null, asr, openings: safety.refusal_openings?.harmful || {},
      label: arm + (compensation && compensation !== "none" ? `, ${compensation}` : "") + (ablation?.control ? `, seed ${ablation.seed}` : "") });
  }
  entries.sort((a, b) => armRank(a.arm) - armRank(b.arm) || a.arm.localeCompare(b.arm) ||
    String(a.compensation).localeCompare(String(b.compensation)) || (a.seed ?? 0) - (b.seed ?? 0));
  const seen = new Map();  // two evaluations of the same arm: tell them apart by id
  for (const e of entries) seen.set(e.format + e.label, (seen.get(e.format + e.label) || 0) + 1);
  for (const e of entries) if (seen.get(e.format + e.label) > 1) e.label += ` (${shortId(e.id)})`;
  return entries;
}

const intervalPoints = (byCondition) => Object.entries(byCondition || {}).filter(([, v]) => v && v.ci95)
  .map(([condition, v]) => ({ condition, rate: v.rate, ci95: v.ci95, k: v.k, n: v.n }));

// A random control evaluated with several seeds: the range of its seeds' mean rates (the grey band), else null.
function seedRange(entry, siblings, key) {
  if (entry.seed == null) return null;
  const seeds = siblings.filter((o) => o.seed != null && o.arm === entry.arm && o.compensation === entry.compensation);
  const means = seeds.map((o) => intervalPoints(o[key])).filter((p) => p.length)
    .map((p) => p.reduce((s, q) => s + q.rate, 0) / p.length);
  return means.length > 1 ? [Math.min(...means), Math.max(...means)] : null;
}

const ABLATION_METRICS = [["asr", "ASR (keyword list), harmful prompts"], ["openings", "responses opening with a refusal, harmful prompts"]];

// The figures of the ablation comparison: one per metric and prompt format, each with its downloads.
function ablationSection(scored) {
  const entries = ablationEntries(scored);
  if (!entries.some((e) => e.arm !== "dense") && entries.length < 2) return [];
  const parts = [h("h2", {}, "Ablation comparison"), h("p", { class: "muted" },
    "Each dot a condition's rate, its bar the Wilson 95 % interval over the prompts (evaluations of this model); " +
    "grey band: the range of a random control's seeds' mean rates.")];
  for (const format of [...new Set(entries.map((e) => e.format))]) {
    const inFormat = entries.filter((e) => e.format === format);
    for (const [key, title] of ABLATION_METRICS) {
      const rows = inFormat.map((e) => ({ label: e.label, points: intervalPoints(e[key]), range: seedRange(e, inFormat, key) }))
        .filter((r) => r.points.length);
      if (!rows.length) continue;
      const csv = [["prompt_format", "arm", "compensation", "seed", "evaluation_id", "metric", "condition", "rate", "ci95_low", "ci95_high", "k", "n"],
        ...inFormat.flatMap((e) => intervalPoints(e[key]).map((p) =>
          [format, e.arm, e.compensation ?? "", e.seed ?? "", e.id, key, p.condition, p.rate, p.ci95[0], p.ci95[1], p.k ?? "", p.n ?? ""]))];
      parts.push(figure(intervalChart(rows, { title: `${title} · prompt format ${format}` }), `ablation-${key}-${format}`, csv));
    }
  }
  return parts;
}

// ---------------------------------------------------------------- role transfer on the comparison page
function transferSection(crosstab, id) {
  return [h("h3", {}, "As a flow"), transferFlow(crosstab, `role-transfer-${shortId(id)}`)];
}

// ---------------------------------------------------------------- checkpoint series
const SHARE_CLASSES = ["SCU", "RU", "UCU", "CU"];

function seriesForm(params) {
  const input = (name, value, placeholder) => h("input", { name, value: value || "", placeholder });
  const compare = h("input", { type: "checkbox", name: "compare", ...(params.get("compare") === "1" ? { checked: "" } : {}) });
  return h("form", { id: "series-form", onsubmit: (event) => {
    event.preventDefault();
    const form = new FormData(event.target), query = new URLSearchParams();
    for (const name of ["order_by", "labels", "models"]) if (form.get(name)) query.set(name, form.get(name));
    if (form.get("compare")) query.set("compare", "1");
    location.hash = `#/series?${query}`;
  } }, h("label", {}, "order by label ", input("order_by", params.get("order_by") || "checkpoint_step", "checkpoint_step")), " ",
  h("label", {}, "labels ", input("labels", params.get("labels"), "run=run7, stage=sft")), " ",
  h("label", {}, "model ids ", input("models", params.get("models"), "(any)")), " ",
  h("label", { title: "queue a comparison job for each pair of consecutive audits that has none" }, compare, " queue missing comparisons"), " ",
  h("button", { type: "submit" }, "Show"));
}

function parseLabels(text) {
  const labels = {};
  for (const part of (text || "").split(",").map((p) => p.trim()).filter(Boolean)) {
    const at = part.indexOf("=");
    if (at < 1) throw new ApiError(`a label is key=value, got "${part}"`);
    labels[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return labels;
}

async function showSeries() {
  const params = resultsParams();
  const parts = [h("h1", {}, "Checkpoint series"), h("p", { class: "muted" },
    "Succeeded audits and plain evaluations whose labels match, one point per value of the order label (POST /v1/series)."),
  seriesForm(params)];
  if (!params.get("order_by")) return page().replaceChildren(...parts);
  const models = (params.get("models") || "").split(",").map((m) => m.trim()).filter(Boolean);
  const series = await apiPost("/v1/series", { order_by: params.get("order_by"), labels: parseLabels(params.get("labels")),
    compare: params.get("compare") === "1", ...(models.length ? { model_ids: models } : {}) });
  const points = series.points, xs = points.map((p) => p.value);
  if (!points.length) return page().replaceChildren(...parts, h("p", { class: "muted", id: "series-empty" }, "No matching checkpoint."));
  const shares = h("div", { class: "curve-pair" });
  for (const name of SHARE_CLASSES) {
    const values = points.map((p) => p.classes?.[name]?.unit_fraction ?? null);
    shares.append(figure(pointsChart(xs, [{ name, values, color: COLORS[name] }], { title: `${name}: share of units`, format: pct }),
      `series-${name}-share`, [[series.order_by, `${name}_unit_fraction`, `${name}_units`, "audit_id"],
        ...points.map((p) => [p.value, p.classes?.[name]?.unit_fraction ?? "", p.classes?.[name]?.units ?? "", p.audit_id ?? ""])]));
  }
  const rates = [["asr", "ASR", "#d62728"], ["over_refusal", "over-refusal", "#2ca02c"]]
    .map(([key, name, color]) => ({ name, key, color, values: points.map((p) => p.safety?.[key] ?? null) }));
  parts.push(h("h2", {}, "Class shares over checkpoints"), shares, h("h2", {}, "Safety over checkpoints"),
    figure(pointsChart(xs, rates, { title: "ASR and over-refusal", width: 900, format: pct }), "series-safety",
      [[series.order_by, "asr", "over_refusal", "evaluation_id"], ...points.map((p) => [p.value, p.safety?.asr ?? "", p.safety?.over_refusal ?? "", p.evaluation_id ?? ""])]),
    h("h2", {}, "Checkpoints"), table([series.order_by, "audit", "evaluation", "SCU", "RU", "ASR"], points.map((p) => [
      p.value, p.audit_id ? h("a", { href: `#/audit/${p.audit_id}` }, shortId(p.audit_id)) : "",
      p.evaluation_id ? h("a", { href: `#/evaluation/${p.evaluation_id}` }, shortId(p.evaluation_id)) : "",
      p.classes?.SCU ? pct(p.classes.SCU.unit_fraction) : "", p.classes?.RU ? pct(p.classes.RU.unit_fraction) : "",
      p.safety?.asr != null ? pct(p.safety.asr) : ""]), { id: "series-points" }));
  if (series.transitions.length) parts.push(h("h2", {}, "Role transfer between consecutive audits"),
    table(["before", "after", "comparison", "units kept their class", ""], series.transitions.map((t) => [t.before, t.after,
      t.comparison_id ? h("a", { href: `#/comparison/${t.comparison_id}` }, `${shortId(t.comparison_id)} (${t.status})`) : t.status,
      t.crosstab?.unchanged_fraction != null ? pct(t.crosstab.unchanged_fraction) : "",
      h("a", { href: `#/compare?a=${t.before_audit_id}&b=${t.after_audit_id}` }, "side by side")]), { id: "series-transitions" }),
    ...series.transitions.filter((t) => t.crosstab).flatMap((t) => [h("h3", {}, `${series.order_by} ${t.before} → ${t.after}`),
      h("div", { class: "series-flow", "data-before": t.before, "data-after": t.after },
        transferFlow(t.crosstab, `role-transfer-${t.before}-${t.after}`))]));
  page().replaceChildren(...parts);
}

// ---------------------------------------------------------------- two audits side by side
async function auditData(id) {
  const [job, summary, layers] = await Promise.all([api(`/v1/audits/${id}`), api(`/v1/audits/${id}/unit-map`),
    allPages(`/v1/audits/${id}/unit-map/layers?limit=200`)]);
  return { id, job: job.body, summary: summary.body, layers };
}

async function compareForm(a, b) {
  const audits = (await api("/v1/audits?status=succeeded&limit=200")).body.items;
  const select = (name, chosen) => h("select", { name }, h("option", { value: "" }, "—"), audits.map((job) => h("option",
    { value: job.id, ...(job.id === chosen ? { selected: "" } : {}) }, `${shortId(job.id)} · model ${job.model_id?.slice(0, 8) || "?"} · ${new Date(job.created_at).toLocaleString()}`)));
  return h("form", { id: "compare-form", onsubmit: (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    location.hash = `#/compare?a=${form.get("a")}&b=${form.get("b")}`;
  } }, h("label", {}, "audit A ", select("a", a)), " ", h("label", {}, "audit B ", select("b", b)), " ", h("button", { type: "submit" }, "Compare"));
}

// The newest succeeded comparison of the two audits, either way round: [job, reversed] or null.
async function findComparison(a, b) {
  const jobs = await allPages("/v1/comparisons?status=succeeded&limit=200");
  for (const job of jobs) {
    const p = job.params || {};
    if (p.before_audit_id === a && p.after_audit_id === b) return [job, false];
    if (p.before_audit_id === b && p.after_audit_id === a) return [job, true];
  }
  return null;
}

const layerUnits = (layer, name) => (layer.heads?.[name] || 0) + (layer.neurons?.[name] || 0);

async function showCompare() {
  const params = resultsParams(), a = params.get("a"), b = params.get("b");
  const parts = [h("h1", {}, "Two audits side by side"), await compareForm(a, b)];
  if (!a || !b) return page().replaceChildren(...parts);
  const [left, right] = await Promise.all([auditData(a), auditData(b)]);
  const name = (d) => `${shortId(d.id)}`;
  parts.push(h("p", {}, "A ", h("a", { href: `#/audit/${a}` }, name(left)), " · B ", h("a", { href: `#/audit/${b}` }, name(right))));
  const share = (d, c) => d.summary.classes[c]?.unit_fraction ?? 0;
  parts.push(h("h2", {}, "Classes"), table(["class", "A units", "A % of units", "B units", "B % of units", "B − A (points)"],
    CLASSES.map((c) => [c, left.summary.classes[c]?.units ?? 0, pct(share(left, c)), right.summary.classes[c]?.units ?? 0,
      pct(share(right, c)), (100 * (share(right, c) - share(left, c))).toFixed(2)]), { id: "compare-classes" }));
  const shareCsv = [["class", "a_unit_fraction", "b_unit_fraction", "a_units", "b_units"],
    ...CLASSES.map((c) => [c, share(left, c), share(right, c), left.summary.classes[c]?.units ?? 0, right.summary.classes[c]?.units ?? 0])];
  const sharesRow = h("div", { class: "curve-pair" }, CLASSES.map((c) => figure(pointsChart(["A", "B"], [{ name: c, values: [share(left, c), share(right, c)],
    color: COLORS[c] }], { title: `${c}: share of units`, width: 210, height: 160, format: pct }), `compare-${c}-share`, shareCsv)));
  parts.push(sharesRow, h("h2", {}, "Units per layer, each class on its own scale (A solid, B dashed)"));
  const perLayer = h("div", { class: "curve-pair" });
  const layers = Math.max(left.layers.length, right.layers.length), xs = Array.from({ length: layers }, (_, i) => i);
  for (const c of ["SCU", "RU", "UCU"]) {
    const values = (d) => xs.map((i) => (d.layers[i] ? layerUnits(d.layers[i], c) : null));
    perLayer.append(figure(pointsChart(xs, [{ name: `A ${c}`, values: values(left), color: COLORS[c] },
      { name: `B ${c}`, values: values(right), color: COLORS[c], dashed: true }], { title: `${c} units per layer`, width: 440, format: String }),
    `compare-${c}-per-layer`, [["layer", `a_${c}`, `b_${c}`], ...xs.map((i) => [i, values(left)[i] ?? "", values(right)[i] ?? ""])]));
  }
  parts.push(perLayer, h("h2", {}, "Role transfer"));
  const found = await findComparison(a, b);
  if (!found) parts.push(h("p", { class: "muted", id: "no-comparison" }, "No succeeded comparison of these two audits: submit one with ",
    h("code", {}, `POST /v1/comparisons {"before_audit_id": "${a}", "after_audit_id": "${b}"}`), "."));
  else {
    const [job, reversed] = found, { crosstab } = (await api(`/v1/comparisons/${job.id}/result`)).body;
    parts.push(h("p", {}, h("a", { href: `#/comparison/${job.id}` }, `Comparison ${shortId(job.id)}`), reversed ? " (B before A)" : " (A before B)"),
      heatmap(crosstab), transferFlow(crosstab, `role-transfer-${shortId(job.id)}`));
  }
  page().replaceChildren(...parts);
}
