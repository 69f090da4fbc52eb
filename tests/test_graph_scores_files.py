"""Attribution graphs: influence, the two scores, pruning, and the Neuronpedia/circuit-tracer JSON files."""

from __future__ import annotations

import json

import pytest
import torch
from graph_helpers import PROMPT, identity_gap, random_transcoders, toy_model, toy_transcoders

import gpt2probe
from gpt2probe.errors import FileFormatError, InvalidArgumentError, MissingFileError
from gpt2probe.graphs import AttributionGraph, attribution_graph

from models import SMALL, random_ids


@pytest.fixture(scope="module")
def graph(small_probe):
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, 37, seed=5, skip=True)
    return attribution_graph(small_probe, random_ids(SMALL, 1, 8, seed=9)[0], transcoders=tcs, batch_size=16)


def reference_scores(graph) -> tuple[torch.Tensor, float, float]:
    """Influence by a matrix inverse in float64, w @ ((I - A)^-1 - I), and the scores from it."""
    a = graph.adjacency.double().abs()
    a = a / a.sum(1, keepdim=True).clamp(min=1e-10)
    n = a.shape[0]
    w = torch.zeros(n, dtype=torch.float64)
    w[graph.logit_slice] = graph.logit_probabilities.double()
    influence = w @ (torch.linalg.inv(torch.eye(n, dtype=torch.float64) - a) - torch.eye(n, dtype=torch.float64))
    tok, err = influence[graph.token_slice].sum(), influence[graph.error_slice].sum()
    replacement = float(tok / (tok + err))
    out = influence + w
    completeness = float(((1 - a[:, graph.error_slice].sum(1)) * out).sum() / out.sum())
    return influence, replacement, completeness


def test_scores_match_a_matrix_inverse(graph):
    influence, replacement, completeness = reference_scores(graph)
    assert torch.allclose(graph.node_influence().double(), influence, atol=1e-5)
    assert abs(graph.replacement_score() - replacement) < 1e-5
    assert abs(graph.completeness_score() - completeness) < 1e-5
    assert 0 < graph.replacement_score() < 1 and 0 < graph.completeness_score() < 1


def test_prune_keeps_the_influential_nodes(graph):
    pruned = graph.prune(0.8, 0.98)
    mask = pruned.node_mask
    assert bool(mask[graph.token_slice].all()) and bool(mask[graph.logit_slice].all())
    assert 0 < int(mask[: graph.n_features].sum()) < graph.n_features
    # every kept feature has an incoming and an outgoing kept edge; kept edges join kept nodes
    edges = pruned.edge_mask
    for i in mask[: graph.n_features].nonzero(as_tuple=True)[0].tolist():
        assert bool(edges[i].any()) and bool(edges[:, i].any())
    assert not bool(edges[~mask].any()) and not bool(edges[:, ~mask].any())
    # a feature pruned away was never more influential than every kept feature
    influence = graph.node_influence()
    kept = influence[: graph.n_features][mask[: graph.n_features]]
    dropped = influence[: graph.n_features][~mask[: graph.n_features]]
    assert float(dropped.min()) <= float(kept.max())
    # cumulative scores: the most influential node has the smallest, the total is one
    assert abs(float(pruned.cumulative_scores.max()) - 1) < 1e-5
    assert int(pruned.cumulative_scores.argmin()) == int(influence.argmax())
    everything = graph.prune(1.0, 1.0)
    assert int(everything.node_mask.sum()) >= int(mask.sum())
    with pytest.raises(InvalidArgumentError, match="node_threshold"):
        graph.prune(1.5)


def test_full_save_round_trips(graph, tmp_path):
    path = graph.save(tmp_path / "graph.json")
    loaded = AttributionGraph.load(path)
    assert loaded.features.tolist() == graph.features.tolist()
    assert torch.equal(loaded.adjacency, graph.adjacency)
    for name in ("node_values", "constant", "unselected_input", "activations", "logit_probabilities"):
        assert torch.allclose(getattr(loaded, name), getattr(graph, name), atol=1e-6), name
    assert loaded.tokens == graph.tokens and loaded.logit_tokens == graph.logit_tokens
    assert abs(loaded.replacement_score() - graph.replacement_score()) < 1e-6


def test_pruned_save_keeps_the_identity_and_the_frontend_format(graph, tmp_path):
    path = graph.save(tmp_path / "pruned.json", node_threshold=0.8, edge_threshold=0.98, slug="small-test")
    document = json.loads(path.read_text())
    assert set(document) == {"metadata", "qParams", "nodes", "links"}
    assert document["metadata"]["slug"] == "small-test" and document["metadata"]["prompt_tokens"] == graph.str_tokens
    node_keys = {"node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "influence", "activation",
                 "token_prob", "is_target_logit", "clerp", "run_idx", "reverse_ctx_idx"}
    assert all(node_keys <= set(node) for node in document["nodes"])
    types = {node["feature_type"] for node in document["nodes"]}
    assert {"cross layer transcoder", "embedding", "logit"} <= types
    ids = [node["node_id"] for node in document["nodes"]]
    assert len(ids) == len(set(ids))
    assert all(link["source"] in ids and link["target"] in ids for link in document["links"])
    assert sum(node["is_target_logit"] for node in document["nodes"]) == 1
    loaded = AttributionGraph.load(path)
    assert loaded.n_features < graph.n_features
    assert identity_gap(loaded) < 1e-4  # what the file leaves out is kept as left-out input


def test_damaged_files_are_refused(tmp_path, graph):
    with pytest.raises(MissingFileError):
        AttributionGraph.load(tmp_path / "missing.json")
    path = graph.save(tmp_path / "graph.json")
    path.write_text(path.read_text()[:100])
    with pytest.raises(FileFormatError, match="not valid JSON"):
        AttributionGraph.load(path)
    path.write_text(json.dumps({"metadata": {}, "nodes": [], "links": []}))
    with pytest.raises(FileFormatError, match="metadata.gpt2probe"):
        AttributionGraph.load(path)


def test_toy_scores_are_one():
    model = toy_model()
    graph = attribution_graph(gpt2probe.load(model), torch.tensor(PROMPT), transcoders=toy_transcoders(model), max_logits=1)
    _, replacement, completeness = reference_scores(graph)
    assert replacement > 0.999 and completeness > 0.999
