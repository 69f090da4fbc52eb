"""Figures for attribution patching: an estimate beside exact patching, and a circuit as a graph.

Figures only read result objects (never the model, never files); every string shown goes
through :func:`escape_text` once.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from ..display.escape import escape_text
from ..interventions.agreement import Agreement
from ..interventions.circuit import Circuit, FaithfulnessResult
from ..interventions.edges import EdgeScores
from ..interventions.graph import INPUTS, Node
from .style import NEGATIVE, POSITIVE, TABLE_ROW, signed_colour, table_cells, table_layout

HIGHLIGHT = "#d95f02"  # the cells that disagree most: not a sign, so neither blue nor red


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def estimate_scatter(agreement: Agreement, *, method: str, units: str = "metric") -> go.Figure:
    """Each cell's estimated effect against its exact effect, with the line ``estimate = exact``."""
    exact, estimate = agreement.exact.tolist(), agreement.estimate.tolist()
    hover = [f"{escape_text(label)}<br>exact {e:.4g}<br>{escape_text(method)} {s:.4g}"
             for label, e, s in zip(agreement.labels, exact, estimate)]
    worst = {label for label, _, _ in agreement.worst}
    colours = [HIGHLIGHT if label in worst else "#555" for label in agreement.labels]
    low = min(exact + estimate + [0.0])
    high = max(exact + estimate + [0.0])
    fig = go.Figure([
        go.Scatter(x=[low, high], y=[low, high], mode="lines", line={"dash": "dot", "color": "#999"},
                   name="estimate = exact", hoverinfo="skip"),
        go.Scatter(x=exact, y=estimate, mode="markers", marker={"color": colours, "size": 7}, name="cells",
                   text=hover, hovertemplate="%{text}<extra></extra>"),
    ])
    title = (f"{escape_text(method)} vs exact patching ({len(exact)} cells)<br>Pearson {_fmt(agreement.pearson)}, "
             f"Spearman {_fmt(agreement.spearman)}, top-{agreement.k} overlap {agreement.top_k_overlap:.0%} "
             "(orange: the cells that disagree most)")
    fig.update_layout(title=title, xaxis_title=f"exact effect ({escape_text(units)})",
                      yaxis_title=f"estimated effect ({escape_text(units)})", height=520, showlegend=False)
    return fig


def disagreement_table(agreement: Agreement, *, method: str) -> go.Figure:
    """The cells where the estimate and exact patching differ most."""
    labels = [escape_text(label) for label, _, _ in agreement.worst]
    exact = [f"{e:.4g}" for _, e, _ in agreement.worst]
    estimate = [f"{s:.4g}" for _, _, s in agreement.worst]
    difference = [f"{s - e:+.4g}" for _, e, s in agreement.worst]
    fig = go.Figure(go.Table(
        header={"values": table_cells([["cell"], ["exact effect"], [f"{escape_text(method)} effect"],
                                       ["estimate - exact"]]), "height": TABLE_ROW},
        cells={"values": table_cells([labels, exact, estimate, difference]), "align": "left", "height": TABLE_ROW}))
    fig.update_layout(title=f"The {len(labels)} cells where {escape_text(method)} and exact patching disagree most",
                      **table_layout(len(labels)))
    return fig


# Edges into one head's queries, keys and values: each its own dash and its own port on the head's left side.
INPUT_DASH = {"q": "dot", "k": "dash", "v": "solid", "": "solid"}
INPUT_PORT = {"q": -0.22, "k": 0.0, "v": 0.22, "": 0.0}  # y offset (rows) of the point where an edge arrives
INPUT_NAMES = {"q": "into a head's queries (q)", "k": "into a head's keys (k)", "v": "into a head's values (v)"}
PORT_X = 0.12  # edges leave and arrive this far (in columns) from a node's centre, outside its marker


def _y(node: Node, n_heads: int) -> float:
    """Heads on their own rows; embed, MLPs and logits on a row of their own above them."""
    return float(node.head) if node.kind == "head" else -1.0


def circuit_graph(scores: EdgeScores, chosen: Circuit, faithfulness: FaithfulnessResult | None = None) -> go.Figure:
    """The circuit's edges, layers left to right (embed, then each layer's heads and MLP, then the logits).

    Line width grows with ``|score|``; colour follows every gpt2probe figure
    (:mod:`gpt2probe.report.style`): **blue edges raise the metric** (positive score), **red
    edges lower it**. An edge into a head arrives at one of three ports on the head's left
    side, with its own dash: queries (dotted, upper port), keys (dashed, middle), values
    (solid, lower). The legend on the figure says all of this. Node names sit on opaque
    labels drawn over the edges, so no edge runs through a name.
    """
    n_layers, n_heads = scores.n_layers, scores.n_heads
    by_edge = dict(zip(scores.edges, scores.scores.tolist()))
    largest = max((abs(by_edge.get(e, 0.0)) for e in chosen.edges), default=0.0) or 1.0

    def x_of(node: Node) -> float:
        return n_layers + 1.0 if node.kind == "logits" else node.column

    traces = []
    for edge in sorted(chosen.edges, key=lambda e: abs(by_edge.get(e, 0.0))):
        score = by_edge.get(edge, 0.0)
        x0, y0 = x_of(edge.sender) + PORT_X, _y(edge.sender, n_heads)
        x1, y1 = x_of(edge.receiver) - PORT_X, _y(edge.receiver, n_heads) + INPUT_PORT[edge.input]
        label = escape_text(f"{edge}: {score:.4g}")
        traces.append(go.Scatter(
            x=[x0, (x0 + x1) / 2, x1], y=[y0, (y0 + y1) / 2, y1], mode="lines",
            line={"width": 0.5 + 9 * abs(score) / largest, "color": signed_colour(score), "shape": "spline",
                  "dash": INPUT_DASH[edge.input]},
            opacity=0.75, text=[label] * 3, hovertemplate="%{text}<extra></extra>", showlegend=False,
            meta={"edge": str(edge)}))
    nodes = chosen.nodes
    traces.append(go.Scatter(
        x=[x_of(n) for n in nodes], y=[_y(n, n_heads) for n in nodes], mode="markers",
        text=[escape_text(str(n)) for n in nodes],
        marker={"size": 16, "color": "#f5f5f5", "line": {"color": "#333", "width": 1.5}},
        hovertemplate="%{text}<extra></extra>", showlegend=False))
    # The legend: what colour and dash mean (entries drawn with no data, only their key)
    legend = [("raises the metric (score > 0)", POSITIVE, "solid"), ("lowers the metric (score < 0)", NEGATIVE, "solid")]
    legend += [(INPUT_NAMES[which], "#555", INPUT_DASH[which]) for which in INPUTS
               if any(e.input == which for e in chosen.edges)]
    for name, colour, dash in legend:
        traces.append(go.Scatter(x=[None], y=[None], mode="lines", name=name, hoverinfo="skip",
                                 line={"color": colour, "dash": dash, "width": 3}))
    title = f"Circuit: {len(chosen)} of {len(scores)} edges ({escape_text(scores.method)} scores)"
    if faithfulness is not None:
        title += (f"<br>Faithfulness: recovers {faithfulness.recovered:.1%} of the clean - corrupted metric<br>"
                  f"(circuit {faithfulness.circuit_metric:.4g}, corrupted {faithfulness.corrupted_metric:.4g}, "
                  f"clean {faithfulness.clean_metric:.4g})")
    ticks = [0.0] + [v for l in range(n_layers) for v in (l + 1.0, l + 1.5)] + [n_layers + 1.0]
    names = ["embed"] + [t for l in range(n_layers) for t in (f"L{l} heads", f"MLP{l}")] + ["logits"]
    # Node names on opaque labels above each node: annotations are drawn over every trace
    annotations = [dict(x=x_of(n), y=_y(n, n_heads), text=escape_text(str(n)), showarrow=False, yshift=17,
                        font={"size": 11, "color": "#222"}, bgcolor="rgba(255,255,255,0.92)", borderpad=1)
                   for n in nodes]
    fig = go.Figure(traces)
    fig.update_layout(
        title=title, height=340 + 48 * n_heads, margin={"t": 120, "b": 110},
        annotations=annotations, showlegend=True,
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.08, "yanchor": "top",
                "title": {"text": "edges (width: |score|)"}},
        xaxis={"tickvals": ticks, "ticktext": names, "range": [-0.5, n_layers + 1.5], "showgrid": False},
        yaxis={"tickvals": [-1, *range(n_heads)], "ticktext": ["embed / MLP / logits", *(f"H{h}" for h in range(n_heads))],
               "showgrid": False, "autorange": "reversed"})
    return fig
