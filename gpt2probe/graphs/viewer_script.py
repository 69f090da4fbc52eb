"""The graph page's stylesheet and script (kept apart from the Python that assembles the page).

The script reads the embedded graph JSON (circuit-tracer's node/link document, plus
``gpt2probe_contexts``), lays nodes out by layer (rows, logits on top) and position
(columns), draws edges on a canvas under an SVG of nodes (so thousands of edges stay cheap),
and answers clicks through one delegated listener. Supernodes are Neuronpedia's
``qParams.supernodes`` (``[[name, node_id, ...], ...]``): members are drawn as one box and
their edges summed. "Save page" / "Save JSON" download the page or the graph JSON with the
current groups; "Load groups" reads them back from such a JSON. Every string reaches the page
through ``textContent``; the page makes no request (its Content-Security-Policy forbids any).
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1rem; color: #222; }
#wrap { display: flex; gap: 1rem; }
#graph { border: 1px solid #ccc; flex: 1 1 auto; overflow: auto; max-height: 85vh; position: relative; }
#graph canvas { position: absolute; left: 0; top: 0; }
#graph svg { position: relative; display: block; }  /* in the flow: it gives the box its size (scrolls past 85vh) */
#panel { width: 28rem; flex: 0 0 auto; font-size: .9rem; max-height: 85vh; overflow: auto; }
#panel table { border-collapse: collapse; width: 100%; }
#panel td { border-bottom: 1px solid #eee; padding: .1rem .3rem; white-space: pre; }
#panel tr.link { cursor: pointer; }
#panel tr.link:hover { background: #eef; }
#tools { margin: .5rem 0; display: flex; gap: .5rem; flex-wrap: wrap; align-items: center; }
#notes p { margin: .2rem 0; color: #555; font-size: .9rem; }
#legend { margin: .3rem 0; font-size: .9rem; }
#legend .swatch { display: inline-block; width: 1.6em; height: .7em; margin: 0 .25em 0 .6em; vertical-align: middle; }
#legend .dot { display: inline-block; width: .8em; height: .8em; border-radius: 50%; border: 1px solid #333;
  margin: 0 .25em 0 .6em; vertical-align: middle; }
.node { cursor: pointer; stroke: #333; stroke-width: .5; }
.node.selected { stroke: #000; stroke-width: 2.5; }
.node.picked { stroke: #e8710a; stroke-width: 2.5; }
text.tok { font: 11px ui-monospace, monospace; }
g.rows { pointer-events: none; }
text.sn { font: 10px system-ui, sans-serif; pointer-events: none; }
.ctx { font: 12px ui-monospace, monospace; margin: .2rem 0; white-space: pre-wrap; }
.ctx span.peak { font-weight: bold; text-decoration: underline; }
"""

SCRIPT = r"""
(() => {
"use strict";
const t0 = performance.now();
const dataEl = document.getElementById("graph-data");
const doc = JSON.parse(dataEl.textContent);
const NS = "http://www.w3.org/2000/svg";
const meta = doc.metadata, nodes = doc.nodes, links = doc.links;
const contexts = doc.gpt2probe_contexts || {};
const contextLabels = doc.gpt2probe_context_labels || {};  // the contexts' tokens as every report shows them
const nLayers = meta.gpt2probe.n_layers, nPos = meta.prompt_tokens.length;
const colW = 90, rowH = 46, left = 60, top = 20;
const width = left + nPos * colW + 40, height = top + (nLayers + 3) * rowH + 40;
const rowOf = n => n.feature_type === "embedding" ? nLayers + 1 : n.feature_type === "logit" ? 0 : nLayers - Number(n.layer);
const byId = new Map(), slot = new Map();
for (const n of nodes) {
  const key = rowOf(n) + "," + n.ctx_idx;
  const k = slot.get(key) || 0; slot.set(key, k + 1);
  n.x = left + n.ctx_idx * colW + 10 + (k % 8) * 9;
  n.y = top + rowOf(n) * rowH + 10 + Math.floor(k / 8) * 9;
  byId.set(n.node_id, n);
}
const noteBox = document.getElementById("notes");
function note(text) { const p = document.createElement("p"); p.textContent = text; noteBox.append(p); }

// -- supernodes: [[name, id, ...], ...]; members are drawn as one box with summed edges ---------
let groups = [];
function setGroups(list) {
  groups = [];
  for (const g of list) {
    const members = g.slice(1).filter(id => byId.has(id) && !groups.some(o => o.members.includes(id)));
    if (members.length < g.length - 1) note("supernode " + JSON.stringify(g[0]) + ": " + (g.length - 1 - members.length) +
                                            " member(s) not in this graph (or in another group) left out");
    if (members.length) groups.push({name: String(g[0]), members: members});
  }
  rebuild();
}
const groupList = () => groups.map(g => [g.name, ...g.members]);
let owner = new Map(), view = new Map(), viewLinks = [];
function rebuild() {
  owner = new Map(); view = new Map();
  for (const n of nodes) {
    owner.set(n.node_id, n.node_id);
    view.set(n.node_id, {id: n.node_id, node: n, x: n.x, y: n.y, incoming: [], outgoing: []});
  }
  groups.forEach((g, i) => {
    const id = "supernode:" + i, ms = g.members.map(m => byId.get(m));
    const v = {id: id, group: g, x: ms.reduce((a, m) => a + m.x, 0) / ms.length, y: ms.reduce((a, m) => a + m.y, 0) / ms.length,
               incoming: [], outgoing: []};
    for (const m of g.members) { owner.set(m, id); view.delete(m); }
    view.set(id, v);
  });
  const summed = new Map();
  for (const l of links) {
    const s = owner.get(l.source), t = owner.get(l.target);
    if (s === undefined || t === undefined || s === t) continue;
    const key = s + "\u0000" + t;
    const e = summed.get(key);
    if (e) e.weight += l.weight; else summed.set(key, {source: s, target: t, weight: l.weight});
  }
  viewLinks = [...summed.values()];
  for (const l of viewLinks) { view.get(l.source).outgoing.push(l); view.get(l.target).incoming.push(l); }
  viewLinks.sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight));
  drawNodes(); drawEdges(focus && view.get(focus.id) ? view.get(focus.id) : null);
  if (focus) { const v = view.get(focus.id); if (v) show(v.id); else { focus = null; panelIntro(); } }
}

// -- drawing -----------------------------------------------------------------------------------
const canvas = document.createElement("canvas");
const ratio = window.devicePixelRatio || 1;
canvas.width = width * ratio; canvas.height = height * ratio;
canvas.style.width = width + "px"; canvas.style.height = height + "px";
const ctx2d = canvas.getContext("2d"); ctx2d.scale(ratio, ratio);
const svg = document.createElementNS(NS, "svg");
svg.setAttribute("width", width); svg.setAttribute("height", height);
const labelLayer = document.createElementNS(NS, "g"), nodeLayer = document.createElementNS(NS, "g");
// The row names stay at the box's left edge however far the graph is scrolled (over a white strip, above the edges).
const rowLayer = document.createElementNS(NS, "g");
rowLayer.setAttribute("class", "rows");
svg.append(labelLayer, nodeLayer, rowLayer);
function label(text, x, y, cls, layer) {
  const t = document.createElementNS(NS, "text");
  t.setAttribute("x", x); t.setAttribute("y", y); if (cls) t.setAttribute("class", cls);
  t.textContent = text; (layer || labelLayer).append(t);
}
const strip = document.createElementNS(NS, "rect");
strip.setAttribute("x", 0); strip.setAttribute("y", 0); strip.setAttribute("width", left - 8);
strip.setAttribute("height", height); strip.setAttribute("fill", "rgba(255,255,255,0.85)");
rowLayer.append(strip);
for (let r = 0; r <= nLayers + 1; r++)
  label(r === 0 ? "logits" : r === nLayers + 1 ? "emb" : "L" + (nLayers - r), 4, top + r * rowH + 16, "row", rowLayer);
const tokenLabels = doc.gpt2probe_token_labels;  // rendered in Python by display.escape.token_text, as every report
tokenLabels.forEach((tok, p) => label(tok, left + p * colW, top + (nLayers + 2) * rowH + 16, "tok"));
const colour = n => ({"cross layer transcoder": "#8ab4f8", "mlp reconstruction error": "#bbbbbb",
                      "embedding": "#a8e6a1", "logit": "#f6c26b"})[n.feature_type] || "#ffffff";
const MAX_DRAWN = 3000;
function drawEdges(f) {
  ctx2d.clearRect(0, 0, width, height);
  const shown = f ? f.incoming.concat(f.outgoing) : viewLinks.slice(0, MAX_DRAWN);
  if (!shown.length) return;
  const maxW = Math.max(1e-12, ...shown.map(l => Math.abs(l.weight)));
  ctx2d.globalAlpha = 0.6;
  for (const l of shown) {
    const s = view.get(l.source), t = view.get(l.target);
    ctx2d.strokeStyle = l.weight >= 0 ? "#1a73e8" : "#d93025";
    ctx2d.lineWidth = 0.3 + 4 * Math.abs(l.weight) / maxW;
    ctx2d.beginPath(); ctx2d.moveTo(s.x, s.y); ctx2d.lineTo(t.x, t.y); ctx2d.stroke();
  }
}
function drawNodes() {
  const els = [];
  for (const v of view.values()) {
    let el;
    if (v.group) {
      el = document.createElementNS(NS, "rect");
      el.setAttribute("x", v.x - 7); el.setAttribute("y", v.y - 7); el.setAttribute("width", 14); el.setAttribute("height", 14);
      el.setAttribute("rx", 3); el.setAttribute("fill", "#c58af9");
      const t = document.createElementNS(NS, "text");
      t.setAttribute("x", v.x + 9); t.setAttribute("y", v.y - 8); t.setAttribute("class", "sn"); t.textContent = v.group.name;
      els.push(t);
    } else {
      el = document.createElementNS(NS, "circle");
      el.setAttribute("cx", v.x); el.setAttribute("cy", v.y); el.setAttribute("r", 4); el.setAttribute("fill", colour(v.node));
    }
    el.setAttribute("class", "node" + (picked.has(v.id) ? " picked" : "") + (focus && focus.id === v.id ? " selected" : ""));
    el.dataset.id = v.id;
    const tip = document.createElementNS(NS, "title"); tip.textContent = describe(v); el.append(tip);
    els.push(el);
  }
  nodeLayer.replaceChildren(...els);
}

// -- the panel ---------------------------------------------------------------------------------
function describeNode(n) {
  if (n.feature_type === "cross layer transcoder") return "L" + n.layer + " f" + n.feature + " @" + n.ctx_idx;
  if (n.feature_type === "mlp reconstruction error") return "error L" + n.layer + " @" + n.ctx_idx;
  if (n.feature_type === "embedding") return "emb " + tokenLabels[n.ctx_idx] + " @" + n.ctx_idx;
  return n.clerp;
}
const describe = v => v.group ? "supernode " + JSON.stringify(v.group.name) + " (" + v.group.members.length + ")"
                               : describeNode(v.node);
const panel = document.getElementById("panel");
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function panelIntro() { panel.replaceChildren(el("p", "Click a node for its edges; shift-click nodes to pick them, then group them.")); }
function table(title, rows, other) {
  const tb = el("table");
  for (const l of rows.slice().sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, 40)) {
    const tr = el("tr", undefined, "link");
    tr.append(el("td", l.weight.toFixed(4)), el("td", describe(view.get(other(l)))));
    tr.addEventListener("click", () => show(other(l)));
    tb.append(tr);
  }
  return [el("h3", title + " (" + rows.length + ")"), tb];
}
function contextBlock(n) {
  if (n.feature_type !== "cross layer transcoder") return [];
  const list = contexts[n.layer + "_" + n.feature];
  if (list === undefined) return [];
  const out = [el("h3", "top contexts")];
  if (!list.length) out.push(el("p", "not active in any of the texts"));
  list.forEach((c, j) => {
    const div = el("div", undefined, "ctx");
    div.append(el("span", c.value.toFixed(3) + "  "));
    contextLabels[n.layer + "_" + n.feature][j].forEach((tok, i) => {
      const s = el("span", tok, i === c.center ? "peak" : undefined);
      const a = Math.max(0, Math.min(1, c.acts[i] / (Math.abs(c.value) || 1)));
      s.style.background = "rgba(255, 140, 0, " + a.toFixed(3) + ")";
      div.append(s);
    });
    out.push(div);
  });
  return out;
}
let focus = null;
const picked = new Set();
function show(id) {
  const v = view.get(id);
  if (!v) throw new Error("no node " + id);
  focus = v;
  const parts = [el("h2", describe(v))];
  if (v.group) {
    parts.push(el("p", "members: " + v.group.members.map(m => describeNode(byId.get(m))).join(", ")));
    const b = el("button", "ungroup"); b.addEventListener("click", () => ungroup(groups.indexOf(v.group))); parts.push(b);
  } else if (v.node.activation !== null && v.node.activation !== undefined) {
    parts.push(el("p", "activation " + v.node.activation.toFixed(4)));
  }
  if (!v.group) parts.push(...contextBlock(v.node));
  parts.push(...table("incoming", v.incoming, l => l.source), ...table("outgoing", v.outgoing, l => l.target));
  panel.replaceChildren(...parts);
  drawNodes(); drawEdges(v);
}
function group(name, ids) {
  const members = [];
  for (const id of ids) {
    const v = view.get(id);
    if (!v) continue;
    if (v.group) { members.push(...v.group.members); groups.splice(groups.indexOf(v.group), 1); } else members.push(id);
  }
  if (!members.length) return;
  groups.push({name: name || "group " + (groups.length + 1), members: members});
  picked.clear(); focus = null;
  rebuild();
  show("supernode:" + (groups.length - 1));
}
function ungroup(i) { groups.splice(i, 1); focus = null; rebuild(); panelIntro(); }
nodeLayer.addEventListener("click", e => {
  const id = e.target.dataset && e.target.dataset.id;
  if (!id) return;
  if (e.shiftKey || e.ctrlKey || e.metaKey) { if (picked.has(id)) picked.delete(id); else picked.add(id); drawNodes(); }
  else show(id);
});

// -- saving and loading groups -----------------------------------------------------------------
function safeJson(value) {
  return JSON.stringify(value).replace(/&/g, "\\u0026").replace(/</g, "\\u003c").replace(/>/g, "\\u003e");
}
function exportJson() {
  const out = Object.assign({}, doc, {qParams: Object.assign({}, doc.qParams, {supernodes: groupList()})});
  delete out.gpt2probe_contexts;
  delete out.gpt2probe_token_labels;
  delete out.gpt2probe_context_labels;
  return JSON.stringify(out);
}
function exportHtml() {
  const copy = document.documentElement.cloneNode(true);
  const data = Object.assign({}, doc, {qParams: Object.assign({}, doc.qParams, {supernodes: groupList()})});
  copy.querySelector("#graph-data").textContent = safeJson(data);
  copy.querySelector("#graph").replaceChildren();
  copy.querySelector("#notes").replaceChildren();
  copy.querySelector("#panel").replaceChildren();
  copy.querySelector("body").removeAttribute("data-ready");
  return "<!DOCTYPE html>\n" + copy.outerHTML;
}
function download(text, name, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], {type: type}));
  a.download = name; document.body.append(a); a.click(); a.remove();
}
document.getElementById("group").addEventListener("click", () => {
  group(document.getElementById("group-name").value.trim(), [...picked]);
});
document.getElementById("save-html").addEventListener("click", () => download(exportHtml(), "graph.html", "text/html"));
document.getElementById("save-json").addEventListener("click", () => download(exportJson(), "graph.json", "application/json"));
document.getElementById("load-json").addEventListener("change", e => {
  const file = e.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    try { setGroups(JSON.parse(reader.result).qParams.supernodes || []); }
    catch (err) { note("could not read supernodes from " + file.name + ": " + err.message); }
  };
  reader.readAsText(file);
});

const graphBox = document.getElementById("graph");
graphBox.append(canvas, svg);
graphBox.addEventListener("scroll", () => rowLayer.setAttribute("transform", "translate(" + graphBox.scrollLeft + ",0)"));
graphBox.scrollLeft = graphBox.scrollWidth;  // open on the last positions, where the traced prediction is
rowLayer.setAttribute("transform", "translate(" + graphBox.scrollLeft + ",0)");
panelIntro();
setGroups((doc.qParams && doc.qParams.supernodes) || []);
window.graphViewer = {show: show, nodes: nodes, group: group, ungroup: ungroup, groups: groupList, setGroups: setGroups,
                      exportJson: exportJson, exportHtml: exportHtml, pick: id => { picked.add(id); drawNodes(); },
                      renderMs: 0};
void document.body.offsetHeight;  // lay the page out before taking the time
window.graphViewer.renderMs = performance.now() - t0;
document.body.dataset.ready = "1";
})();
"""
