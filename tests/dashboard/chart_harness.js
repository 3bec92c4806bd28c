// Runs app.js under a minimal DOM in Node and prints the SVG markup of one lineChart call (JSON args on argv).
const fs = require("fs");
const vm = require("vm");

class Node_ {
  constructor(tag) { this.tag = tag; this.attrs = {}; this.children = []; }
  setAttribute(name, value) { this.attrs[name] = String(value); }
  append(...nodes) { this.children.push(...nodes); }
  replaceChildren(...nodes) { this.children = nodes; }
  addEventListener() {}
  get outerHTML() {
    if (this.tag === "#text") return this.text;
    const attrs = Object.entries(this.attrs).map(([k, v]) => ` ${k}="${v}"`).join("");
    return `<${this.tag}${attrs}>${this.children.map((c) => c.outerHTML).join("")}</${this.tag}>`;
  }
}
const document = {
  createElement: (tag) => new Node_(tag),
  createElementNS: (ns, tag) => new Node_(tag),
  createTextNode: (text) => Object.assign(new Node_("#text"), { text }),
  getElementById: () => new Node_("div"),
};
const context = {
  document, Node: Node_, console, location: { hash: "" }, localStorage: { getItem: () => null, setItem() {} },
  window: { addEventListener() {} }, fetch: () => new Promise(() => {}),
  setInterval: () => 0, clearInterval() {}, setTimeout: () => 0, clearTimeout() {},
};
vm.createContext(context);
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), context);
const [steps, baseline] = JSON.parse(process.argv[3]);
const chart = vm.runInContext("(steps, baseline) => lineChart(steps.filter((s) => s.loss != null).map((s) => [s.step, s.loss]), 900, 240, refusalSeries(steps, baseline))", context)(steps, baseline);
process.stdout.write(chart.outerHTML);
