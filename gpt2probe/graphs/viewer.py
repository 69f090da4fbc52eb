"""An offline HTML page of an attribution graph: nodes by layer (rows) and position (columns), weighted edges.

The page is one file with no network access (its Content-Security-Policy forbids every request):
the graph's JSON (the same document :meth:`AttributionGraph.save` writes) is embedded in a
``<script type="application/json">`` block with ``<``, ``>`` and ``&`` escaped, so no token can
close the block, and the script puts every string on the page through ``textContent``, never as
HTML. Click a node to list its incoming and outgoing edges.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from .files import graph_json

CONTENT_SECURITY_POLICY = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1rem; color: #222; }
#wrap { display: flex; gap: 1rem; }
#graph { border: 1px solid #ccc; flex: 1 1 auto; overflow: auto; max-height: 85vh; }
#panel { width: 26rem; flex: 0 0 auto; font-size: .9rem; max-height: 85vh; overflow: auto; }
#panel table { border-collapse: collapse; width: 100%; }
#panel td { border-bottom: 1px solid #eee; padding: .1rem .3rem; white-space: pre; }
circle { cursor: pointer; stroke: #333; stroke-width: .5; }
circle.selected { stroke: #000; stroke-width: 2.5; }
text.tok { font: 11px ui-monospace, monospace; }
"""

_SCRIPT = r"""
(() => {
"use strict";
const doc = JSON.parse(document.getElementById("graph-data").textContent);
const NS = "http://www.w3.org/2000/svg";
const meta = doc.metadata, nodes = doc.nodes, links = doc.links;
const nLayers = meta.gpt2probe.n_layers, nPos = meta.prompt_tokens.length;
const colW = 90, rowH = 46, left = 60, top = 20;
const rowOf = n => n.feature_type === "embedding" ? nLayers + 1 : n.feature_type === "logit" ? 0 : nLayers - Number(n.layer);
const byId = new Map();
const slot = new Map();
for (const n of nodes) {
  const key = rowOf(n) + "," + n.ctx_idx;
  const k = slot.get(key) || 0; slot.set(key, k + 1);
  n.x = left + n.ctx_idx * colW + 10 + (k % 8) * 9;
  n.y = top + rowOf(n) * rowH + 10 + Math.floor(k / 8) * 9;
  n.incoming = []; n.outgoing = [];
  byId.set(n.node_id, n);
}
for (const l of links) {
  const s = byId.get(l.source), t = byId.get(l.target);
  if (s && t) { s.outgoing.push(l); t.incoming.push(l); }
}
const maxW = Math.max(1e-12, ...links.map(l => Math.abs(l.weight)));
const svg = document.createElementNS(NS, "svg");
svg.setAttribute("width", left + nPos * colW + 40);
svg.setAttribute("height", top + (nLayers + 3) * rowH + 40);
const edgeLayer = document.createElementNS(NS, "g"), nodeLayer = document.createElementNS(NS, "g");
svg.append(edgeLayer, nodeLayer);
function label(text, x, y, cls) {
  const t = document.createElementNS(NS, "text");
  t.setAttribute("x", x); t.setAttribute("y", y); if (cls) t.setAttribute("class", cls);
  t.textContent = text; svg.append(t);
}
for (let r = 0; r <= nLayers + 1; r++) {
  label(r === 0 ? "logits" : r === nLayers + 1 ? "emb" : "L" + (nLayers - r), 4, top + r * rowH + 16);
}
meta.prompt_tokens.forEach((tok, p) => label(JSON.stringify(tok), left + p * colW, top + (nLayers + 2) * rowH + 16, "tok"));
const colour = n => ({"cross layer transcoder": "#8ab4f8", "mlp reconstruction error": "#bbbbbb",
                      "embedding": "#a8e6a1", "logit": "#f6c26b"})[n.feature_type] || "#ffffff";
let selected = null;
function draw(focus) {
  edgeLayer.replaceChildren();
  const shown = focus ? focus.incoming.concat(focus.outgoing) : links.filter(l => Math.abs(l.weight) > 0.05 * maxW);
  for (const l of shown) {
    const s = byId.get(l.source), t = byId.get(l.target);
    if (!s || !t) continue;
    const e = document.createElementNS(NS, "line");
    e.setAttribute("x1", s.x); e.setAttribute("y1", s.y); e.setAttribute("x2", t.x); e.setAttribute("y2", t.y);
    e.setAttribute("stroke", l.weight >= 0 ? "#1a73e8" : "#d93025");
    e.setAttribute("stroke-opacity", 0.6);
    e.setAttribute("stroke-width", 0.3 + 4 * Math.abs(l.weight) / maxW);
    edgeLayer.append(e);
  }
}
function describe(n) {
  if (n.feature_type === "cross layer transcoder") return "L" + n.layer + " f" + n.feature + " @" + n.ctx_idx;
  if (n.feature_type === "mlp reconstruction error") return "error L" + n.layer + " @" + n.ctx_idx;
  if (n.feature_type === "embedding") return "emb " + JSON.stringify(meta.prompt_tokens[n.ctx_idx]) + " @" + n.ctx_idx;
  return n.clerp;
}
function table(title, rows, other) {
  const h = document.createElement("h3"); h.textContent = title;
  const tb = document.createElement("table");
  for (const l of rows.slice().sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, 40)) {
    const tr = document.createElement("tr");
    const a = document.createElement("td"), b = document.createElement("td");
    a.textContent = l.weight.toFixed(4); b.textContent = describe(byId.get(other(l)));
    tr.append(a, b); tb.append(tr);
  }
  return [h, tb];
}
function show(n) {
  if (selected) selected.el.classList.remove("selected");
  selected = n; n.el.classList.add("selected");
  const panel = document.getElementById("panel");
  const h = document.createElement("h2"); h.textContent = describe(n);
  const p = document.createElement("p");
  p.textContent = n.activation !== null && n.activation !== undefined ? "activation " + n.activation.toFixed(4) : "";
  panel.replaceChildren(h, p, ...table("incoming", n.incoming, l => l.source), ...table("outgoing", n.outgoing, l => l.target));
  draw(n);
}
for (const n of nodes) {
  const c = document.createElementNS(NS, "circle");
  c.setAttribute("cx", n.x); c.setAttribute("cy", n.y); c.setAttribute("r", 4); c.setAttribute("fill", colour(n));
  const tip = document.createElementNS(NS, "title"); tip.textContent = describe(n); c.append(tip);
  c.addEventListener("click", () => show(n));
  n.el = c; nodeLayer.append(c);
}
draw(null);
document.getElementById("graph").append(svg);
window.graphViewer = {show: id => show(byId.get(id)), nodes: nodes};
document.body.dataset.ready = "1";
})();
"""


def _safe_json(document: dict) -> str:
    """JSON that cannot end the ``<script>`` block it sits in."""
    text = json.dumps(document, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def graph_html(graph: Any, *, node_threshold: float | None = 0.8, edge_threshold: float | None = 0.98,
               title: str = "Attribution graph") -> str:
    """The page's HTML (pruned with circuit-tracer's defaults unless the thresholds are ``None``)."""
    document = graph_json(graph, node_threshold=node_threshold, edge_threshold=edge_threshold, slug=None)
    summary = (f"{graph.model_name}: {graph.n_features} of {graph.n_active_features} active features, "
               f"replacement score {graph.replacement_score():.3f}, completeness {graph.completeness_score():.3f}")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CONTENT_SECURITY_POLICY}\">"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>{escape(summary)}</p>"
        "<div id=\"wrap\"><div id=\"graph\"></div><div id=\"panel\"><p>Click a node.</p></div></div>"
        f"<script type=\"application/json\" id=\"graph-data\">{_safe_json(document)}</script>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def write_graph_html(graph: Any, path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`graph_html` to ``path`` atomically; returns the path."""
    return write_text_atomic(path, graph_html(graph, **kwargs))
