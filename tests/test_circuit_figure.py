"""The circuit graph reads at a glance: one colour rule with the package, q/k/v told apart, names not crossed.

A synthetic :class:`EdgeScores` (no model): two layers, two heads, edges into one head's
queries, keys and values, one of them negative.
"""

from __future__ import annotations

import pytest
import torch

from gpt2probe.interventions.circuit import Circuit
from gpt2probe.interventions.edges import EdgeScores
from gpt2probe.interventions.graph import Edge
from gpt2probe.report import style
from gpt2probe.report.attribution_patching import circuit_graph

EDGES = ("L0H0 -> L1H1.q", "L0H0 -> L1H1.k", "L0H1 -> L1H1.v", "embed -> L0H0.v", "L1H1 -> logits", "MLP0 -> L1H1.k")
SCORES = (0.9, 0.5, -0.4, 0.3, 1.2, -0.05)


@pytest.fixture(scope="module")
def figure():
    edges = tuple(Edge.parse(e) for e in EDGES)
    scores = EdgeScores(edges, torch.tensor(SCORES), clean_metric=2.0, corrupted_metric=0.0, method="atp",
                        direction="denoise", n_layers=2, n_heads=2)
    return circuit_graph(scores, Circuit(frozenset(edges), tuple(zip(edges, SCORES))))


def edge_traces(fig) -> dict[str, object]:
    return {t.meta["edge"]: t for t in fig.data if t.meta and "edge" in t.meta}


def test_colours_follow_the_package_rule(figure):
    assert "blue edges raise the metric" in circuit_graph.__doc__
    traces = edge_traces(figure)
    for text, score in zip(EDGES, SCORES):
        assert traces[text].line.color == (style.POSITIVE if score > 0 else style.NEGATIVE), text


def test_the_legend_is_on_the_figure(figure):
    assert figure.layout.showlegend is True
    legend = {t.name: (t.line.color, t.line.dash) for t in figure.data if t.showlegend is not False and t.name}
    assert legend["raises the metric (score > 0)"][0] == style.POSITIVE
    assert legend["lowers the metric (score < 0)"][0] == style.NEGATIVE
    dashes = {legend[f"into a head's {w} ({w[0]})"][1] for w in ("queries", "keys", "values")}
    assert len(dashes) == 3


def test_q_k_v_into_one_head_are_distinguishable(figure):
    traces = edge_traces(figure)
    q, k, v = (traces[e] for e in ("L0H0 -> L1H1.q", "L0H0 -> L1H1.k", "L0H1 -> L1H1.v"))
    assert len({q.line.dash, k.line.dash, v.line.dash}) == 3
    assert len({q.y[-1], k.y[-1], v.y[-1]}) == 3  # three ports on the receiving head
    assert traces["MLP0 -> L1H1.k"].line.dash == k.line.dash and traces["MLP0 -> L1H1.k"].y[-1] == k.y[-1]


def test_node_names_sit_on_opaque_labels_over_the_edges(figure):
    nodes = [t for t in figure.data if t.mode == "markers"]
    assert len(nodes) == 1 and nodes[0].mode == "markers"  # no text drawn under the edges' layer
    names = {a.text for a in figure.layout.annotations}
    assert names == {"embed", "L0H0", "L0H1", "L1H1", "MLP0", "logits"}
    assert all(a.bgcolor and a.bgcolor.startswith("rgba(255,255,255,0.9") for a in figure.layout.annotations)
    centres = set(nodes[0].x)
    for t in edge_traces(figure).values():  # edges leave and end beside a node's marker, not at its centre
        assert t.x[0] not in centres and t.x[-1] not in centres
