// Runs app.js and the page scripts under a minimal DOM in Node and prints what one call returns (a node's
// markup, or JSON): argv: app.js, the scripts (comma-separated), the function, its JSON arguments.
const fs = require("fs");
const vm = require("vm");

class Node_ {
  constructor(tag) { this.tag = tag; this.attrs = {}; this.children = []; }
  setAttribute(name, value) { this.attrs[name] = String(value); }
  getAttribute(name) { return this.attrs[name]; }
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
for (const script of process.argv[3].split(",")) vm.runInContext(fs.readFileSync(script, "utf8"), context);
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), context);
const args = JSON.parse(process.argv[5]);
const answer = vm.runInContext(process.argv[4], context)(...args);
process.stdout.write(answer instanceof Node_ ? answer.outerHTML : JSON.stringify(answer));
