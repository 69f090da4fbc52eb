"""Edge attribution, circuits and faithfulness, checked against TransformerLens, node-level identities and exact patching."""

from __future__ import annotations

import pytest
import torch
from test_attribution_patching import logit_diff, pair, toy_pair

from gpt2probe.errors import GPT2ProbeError
from gpt2probe.hooks import count_torch_hooks
from gpt2probe.interventions import attribution_patch, patch
from gpt2probe.interventions.circuit import Circuit, circuit, circuit_of_nodes, faithfulness
from gpt2probe.interventions.edges import edge_attribution_patch
from gpt2probe.interventions.graph import EMBED, LOGITS, Edge, Node, all_edges

from models import SMALL, assert_close


def by_edge(scores):
    return {e: float(s) for e, s in zip(scores.edges, scores.scores)}


def test_graph_edges_go_forward_only():
    edges = all_edges(2, 3)
    assert Edge(Node("head", 0, 1), Node("head", 1, 2), "k") in edges
    assert Edge(Node("head", 1, 0), Node("mlp", 1)) in edges  # a layer's heads feed its own MLP
    assert Edge(Node("mlp", 1), Node("head", 1, 0), "q") not in edges
    assert Edge(Node("head", 1, 0), Node("head", 1, 2), "v") not in edges
    # embed -> 2 layers * (9 head inputs + MLP) + logits; each head -> later heads, MLPs, logits; each MLP -> later.
    assert len(edges) == 21 + 3 * (9 + 2 + 1) + 3 * (1 + 1) + (9 + 1 + 1) + 1
    assert len(set(edges)) == len(edges)
    assert all(Edge.parse(str(e)) == e for e in edges)


def test_edge_atp_equals_transformer_lens_edges(small_probe, small_bridge):
    """TL 4.3 scores per-position edges (a_clean - a_corrupt) . grad at the reader's input; summed over positions they are ours."""
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig
    from transformer_lens.tools.analysis.attribution_patching import attribution_patch as tl_attribution_patch

    clean, corrupted = pair()
    tl = tl_attribution_patch(small_bridge, clean, corrupted, logit_diff, EdgeAttributionConfig(granularity="edge"))
    kinds = {"q_input": "q", "k_input": "k", "v_input": "v"}
    summed: dict[Edge, float] = {}
    for (writer, reader), score in tl.edge_scores.items():
        sender = {"embed": EMBED, "mlp_out": Node("mlp", writer.layer or 0)}.get(writer.kind) or Node("head", writer.layer, writer.head)
        if reader.kind == "logits":
            receiver, which = LOGITS, ""
        elif reader.kind == "mlp_in":
            receiver, which = Node("mlp", reader.layer), ""
        else:
            receiver, which = Node("head", reader.layer, reader.head), kinds[reader.kind]
        edge = Edge(sender, receiver, which)
        summed[edge] = summed.get(edge, 0.0) + score  # TL averages pairs, as our mean metric does
    ours = by_edge(edge_attribution_patch(small_probe, clean, corrupted, metric=logit_diff))
    assert set(summed) == set(ours)
    keys = sorted(ours)
    assert_close(torch.tensor([ours[k] for k in keys]), torch.tensor([summed[k] for k in keys]), 1e-4, "edges")


def test_edges_out_of_a_sender_sum_to_its_node_attribution(small_probe):
    """The residual stream is a sum, so a sender's gradient is the sum of its receivers' input gradients."""
    clean, corrupted = pair()
    scores = edge_attribution_patch(small_probe, clean, corrupted, metric=logit_diff)
    heads = attribution_patch(small_probe, clean, corrupted, kind="head", metric=logit_diff, normalize=False)
    mlps = attribution_patch(small_probe, clean, corrupted, kind="mlp_out", metric=logit_diff, normalize=False,
                             per_position=False)
    out = {}
    for edge, score in by_edge(scores).items():
        out[edge.sender] = out.get(edge.sender, 0.0) + score
    expected_heads = torch.tensor([[out[Node("head", l, h)] for h in range(SMALL.n_head)] for l in range(SMALL.n_layer)])
    assert_close(heads.values - heads.corrupted_metric, expected_heads.float(), 1e-4, "heads")
    expected_mlps = torch.tensor([out[Node("mlp", l)] for l in range(SMALL.n_layer)])
    assert_close(mlps.values - mlps.corrupted_metric, expected_mlps.float(), 1e-4, "mlps")


def test_faithfulness_identities_and_exact_head_patching(small_probe):
    clean, corrupted = pair()
    graph = all_edges(SMALL.n_layer, SMALL.n_head)
    full = faithfulness(small_probe, graph, clean, corrupted, metric=logit_diff)
    empty = faithfulness(small_probe, [], clean, corrupted, metric=logit_diff)
    assert full.recovered == pytest.approx(1.0, abs=1e-4) and empty.recovered == pytest.approx(0.0, abs=1e-4)
    assert (full.n_edges, full.total_edges) == (len(graph), len(graph))
    # Cutting every edge out of one head is patching that head's output to the corrupted run.
    noise = patch(small_probe, clean, corrupted, kind="head", metric=logit_diff, direction="noise", normalize=False)
    for layer, head in [(0, 1), (1, 3), (2, 0)]:
        kept = [e for e in graph if e.sender != Node("head", layer, head)]
        cut = faithfulness(small_probe, kept, clean, corrupted, metric=logit_diff)
        assert cut.circuit_metric == pytest.approx(float(noise.values[layer, head]), abs=1e-4)


def test_faithfulness_equals_transformer_lens(small_probe, small_bridge):
    from transformer_lens.tools.analysis.attribution_patching import Node as TLNode
    from transformer_lens.tools.analysis.attribution_patching import faithfulness as tl_faithfulness

    clean, corrupted = pair(n_batch=1)
    chosen = circuit(edge_attribution_patch(small_probe, clean, corrupted, metric=logit_diff), top=12)
    n_pos = clean.shape[1]

    def tl_node(node, which, position, writer):
        if node.kind == "embed":
            return TLNode(kind="embed", position=position)
        if node.kind == "logits":
            return TLNode(kind="logits", position=position, layer=SMALL.n_layer - 1)
        if node.kind == "mlp":
            return TLNode(kind="mlp_out" if writer else "mlp_in", position=position, layer=node.layer)
        return TLNode(kind="attn_head_out" if writer else f"{which}_input", position=position, layer=node.layer,
                      head=node.head)

    tl_circuit = [(tl_node(e.sender, "", p, True), tl_node(e.receiver, e.input, p, False))
                  for e in chosen.edges for p in range(n_pos)]
    theirs = tl_faithfulness(small_bridge, clean, corrupted, logit_diff, tl_circuit)
    ours = faithfulness(small_probe, chosen, clean, corrupted, metric=logit_diff)
    assert 0.05 < abs(ours.recovered) and abs(ours.recovered - 1) > 0.05  # a partial circuit, not a trivial identity
    assert ours.recovered == pytest.approx(theirs.recovered, abs=1e-4)


# -- the toy induction circuit ----------------------------------------------------------------------

K_COMPOSITION = Edge(Node("head", 0, 0), Node("head", 1, 0), "k")


def test_edge_attribution_finds_k_composition(toy):
    clean, corrupted, metric = toy_pair()
    fixed = edge_attribution_patch(toy, clean, corrupted, metric=metric, method="atp*")
    assert fixed.rank(K_COMPOSITION) <= 1
    assert str(fixed.edges[0]) == "L1H0 -> logits"
    ig = edge_attribution_patch(toy, clean, corrupted, metric=metric, method="ig", steps=8)
    assert ig.rank(K_COMPOSITION) < 5 and abs(ig.score(K_COMPOSITION)) > 0.05
    # Plain atp: the induction head rests on BOS with saturated attention, so its keys show no gradient.
    plain = edge_attribution_patch(toy, clean, corrupted, metric=metric)
    assert abs(plain.score(K_COMPOSITION)) < 1e-2 < fixed.score(K_COMPOSITION)


def test_two_head_circuit_recovers_the_metric(toy):
    clean, corrupted, metric = toy_pair()
    two_heads = circuit_of_nodes(["embed", "L0H0", "L1H0", "logits"], 2, 4)
    assert K_COMPOSITION in two_heads.edges
    assert faithfulness(toy, two_heads, clean, corrupted, metric=metric).recovered > 0.9
    without_k = Circuit(two_heads.edges - {K_COMPOSITION})
    assert faithfulness(toy, without_k, clean, corrupted, metric=metric).recovered < 0.1
    top = circuit(edge_attribution_patch(toy, clean, corrupted, metric=metric, method="atp*"), top=5)
    assert faithfulness(toy, top, clean, corrupted, metric=metric).recovered > 0.9


# -- errors and hooks -------------------------------------------------------------------------------

def test_bad_edges_and_arguments_raise(small_probe):
    clean, corrupted = pair()
    before = count_torch_hooks(small_probe.model)
    with pytest.raises(GPT2ProbeError, match="not in this"):
        faithfulness(small_probe, ["L2H0 -> L1H0.k"], clean, corrupted, metric=logit_diff)
    with pytest.raises(GPT2ProbeError, match="not an edge"):
        Edge.parse("L0H0 L1H0")
    with pytest.raises(GPT2ProbeError, match="not a node"):
        Node.parse("L0X1")
    with pytest.raises(GPT2ProbeError, match="method must be"):
        edge_attribution_patch(small_probe, clean, corrupted, metric=logit_diff, method="eap")
    scores = edge_attribution_patch(small_probe, clean, corrupted, metric=logit_diff)
    with pytest.raises(GPT2ProbeError, match="top must be"):
        circuit(scores, top=-1)
    assert len(circuit(scores, top=3)) == 3
    assert count_torch_hooks(small_probe.model) == before


# -- GradDrop on edges (Kramár et al. 2024, eq. 11) --------------------------------------------------

def test_edge_graddrop_is_known_where_no_gradient_passes_a_layer(small_probe):
    """Into the logits and the last MLP no gradient crosses a layer: every dropped run equals the plain
    score, so graddrop = L / (L - 1) * |score| there; elsewhere some dropped layer changes it."""
    clean, corrupted = pair()
    star = edge_attribution_patch(small_probe, clean, corrupted, metric=logit_diff, method="atp*")
    n = SMALL.n_layer
    direct = torch.tensor([e.receiver.kind == "logits" or (e.receiver.kind == "mlp" and e.receiver.layer == n - 1)
                           for e in star.edges])
    expected = n / (n - 1) * star.scores.abs()
    torch.testing.assert_close(star.graddrop[direct], expected[direct], atol=1e-5, rtol=1e-4)
    assert ((star.graddrop[~direct] - expected[~direct]).abs() > 1e-4).any()
    assert star.graddrop.tolist() == sorted(star.graddrop.tolist(), reverse=True)  # atp* ranks by it
    plain = edge_attribution_patch(small_probe, clean, corrupted, metric=logit_diff)
    assert plain.graddrop is None
