"""An offline HTML page of an attribution graph: nodes by layer (rows) and position (columns), weighted edges.

The page is one file with no network access (its Content-Security-Policy forbids every request):
the graph's JSON (the same document :meth:`AttributionGraph.save` writes) is embedded in a
``<script type="application/json">`` block with ``<``, ``>`` and ``&`` escaped, so no token can
close the block, and the script puts every string on the page through ``textContent``, never as
HTML. Click a node to list its incoming and outgoing edges and, where contexts were given, its
top activating contexts; shift-click nodes and group them into supernodes, saved with the page
("save page") or in the graph JSON ("save JSON", Neuronpedia's ``qParams.supernodes``) and read
back from either. The script and style are in :mod:`.viewer_script`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..display.escape import token_text
from .files import graph_json
from .viewer_script import SCRIPT, STYLE

CONTENT_SECURITY_POLICY = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"

# What the colours mean, on the page (the script draws with the same colours).
LEGEND = (
    '<p id="legend">edges (width: |weight|):'
    '<span class="swatch" style="background:#1a73e8"></span>positive (raises its target)'
    '<span class="swatch" style="background:#d93025"></span>negative (lowers it); nodes:'
    '<span class="dot" style="background:#a8e6a1"></span>token embedding'
    '<span class="dot" style="background:#8ab4f8"></span>transcoder feature'
    '<span class="dot" style="background:#bbbbbb"></span>MLP reconstruction error'
    '<span class="dot" style="background:#f6c26b"></span>logit; rows: layers, layer 0 at the bottom</p>'
)


def _safe_json(document: dict) -> str:
    """JSON that cannot end the ``<script>`` block it sits in."""
    text = json.dumps(document, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def graph_html(graph: Any, *, node_threshold: float | None = 0.8, edge_threshold: float | None = 0.98,
               title: str = "Attribution graph", contexts: dict[str, list[dict]] | None = None,
               supernodes: list[list[str]] | None = None, notes: Sequence[str] = ()) -> str:
    """The page's HTML (pruned with circuit-tracer's defaults unless the thresholds are ``None``).

    Args:
        contexts: top activating contexts per feature, ``{"L_F": [...]}`` as
            :mod:`gpt2probe.graphs.contexts` builds them; shown when a feature is clicked.
        supernodes: groups to start with, ``[[name, node_id, ...], ...]`` (Neuronpedia's
            ``qParams.supernodes``, e.g. from :func:`gpt2probe.graphs.files.read_supernodes`).
        notes: lines shown under the summary (e.g. where the model or the contexts came from).
    """
    document = graph_json(graph, node_threshold=node_threshold, edge_threshold=edge_threshold, slug=None,
                          supernodes=supernodes)
    # Tokens as every gpt2probe report shows them (display.escape.token_text), beside the raw strings the JSON keeps
    document["gpt2probe_token_labels"] = [token_text(t) for t in document["metadata"]["prompt_tokens"]]
    document["gpt2probe_contexts"] = contexts or {}
    document["gpt2probe_context_labels"] = {key: [[token_text(t) for t in c["tokens"]] for c in rows]
                                            for key, rows in (contexts or {}).items()}
    summary = (f"{graph.model_name}: {graph.n_features} of {graph.n_active_features} active features, "
               f"replacement score {graph.replacement_score():.3f}, completeness {graph.completeness_score():.3f}; "
               f"shown: {len(document['nodes'])} nodes, {len(document['links'])} edges")
    note_html = "".join(f"<p>{escape(line)}</p>" for line in notes)
    tools = ("<div id=\"tools\"><input id=\"group-name\" placeholder=\"supernode name\">"
             "<button id=\"group\">group picked nodes</button>"
             "<button id=\"save-html\">save page</button><button id=\"save-json\">save JSON</button>"
             "<label>load groups from JSON <input type=\"file\" id=\"load-json\" accept=\".json\"></label></div>")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CONTENT_SECURITY_POLICY}\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1><p>{escape(summary)}</p><div id=\"static-notes\">{note_html}</div><div id=\"notes\"></div>"
        f"{LEGEND}{tools}<div id=\"wrap\"><div id=\"graph\"></div><div id=\"panel\"></div></div>"
        f"<script type=\"application/json\" id=\"graph-data\">{_safe_json(document)}</script>"
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def write_graph_html(graph: Any, path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`graph_html` to ``path`` atomically; returns the path."""
    return write_text_atomic(path, graph_html(graph, **kwargs))
