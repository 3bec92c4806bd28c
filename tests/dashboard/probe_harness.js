// Runs app.js and probe.js under chart_harness.js's minimal DOM and prints the probe page's charts
// for one summary (and an optional compared one), JSON on argv: [summary, other].
const fs = require("fs");
const vm = require("vm");
const path = require("path");

const harness = fs.readFileSync(path.join(__dirname, "chart_harness.js"), "utf8");
// Reuse the DOM stub: everything of chart_harness.js before it reads its own arguments.
vm.runInThisContext(harness.slice(0, harness.indexOf("vm.createContext")).replace(/^const (fs|vm) = .*$/gm, ""));
vm.createContext(context);
vm.runInContext(fs.readFileSync(process.argv[3], "utf8"), context);  // probe.js first, as index.html loads it
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), context);
const [summary, other] = JSON.parse(process.argv[4]);
const draw = vm.runInContext(`(summary, other) => [
  layerCurves(curvesFor("refusal", summary, other), { label: "refusal" }),
  layerCurves(curvesFor("gap", summary, other), { label: "gap" }),
  writeHistograms(summary.unit_writes), writeTable(summary.unit_writes)]`, context);
process.stdout.write(draw(summary, other).map((node) => node.outerHTML).join("\n"));
