"""Attribution graphs: the decomposition identity, edges against single-source passes, the toy's known path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graph_helpers import PROMPT, TOKEN_OUT, ToyTranscoder, identity_gap, random_transcoders, toy_model, toy_transcoders

import gpt2probe
from gpt2probe.errors import InvalidArgumentError, InvalidTypeError, PromptError, ShapeError, UnsupportedError
from gpt2probe.graphs import attribution_graph
from gpt2probe.graphs.replacement import capture_prompt, replacement_pass
from gpt2probe.graphs.transcoders import check_transcoders
from gpt2probe.hooks import count_torch_hooks

from models import SMALL, random_ids

D_SAE = 37


@pytest.fixture(scope="module")
def ids():
    return random_ids(SMALL, 1, 9, seed=3)[0]


@pytest.mark.parametrize("kind,skip", [("relu", True), ("jumprelu", False), ("topk", True)])
def test_decomposition_identity(small_probe, ids, kind, skip):
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, D_SAE, seed=1, skip=skip, kind=kind)
    graph = attribution_graph(small_probe, ids, transcoders=tcs, batch_size=7)
    assert graph.n_features == graph.n_active_features > 10
    assert float(graph.unselected_input.abs().max()) == 0
    assert identity_gap(graph) < 1e-4
    # the error nodes carry real weight here (random transcoders), so the identity is not trivially about features
    assert float(graph.adjacency[:, graph.error_slice].abs().max()) > 1e-2
    assert count_torch_hooks(small_probe.model) == 0


def test_identity_with_a_feature_budget(small_probe, ids):
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, D_SAE, seed=2, skip=True)
    full = attribution_graph(small_probe, ids, transcoders=tcs, batch_size=8)
    capped = attribution_graph(small_probe, ids, transcoders=tcs, batch_size=8, max_feature_nodes=6)
    assert capped.n_features == 6 and capped.n_active_features == full.n_active_features
    assert identity_gap(capped) < 1e-4
    assert float(capped.unselected_input.abs().max()) > 0
    # the kept features' rows are the full graph's rows, restricted to the kept columns
    for node in range(capped.n_features):
        layer, pos, feat = capped.features[node].tolist()
        full_node = full.feature_node(layer, pos, feat)
        assert torch.allclose(capped.adjacency[node, capped.error_slice], full.adjacency[full_node, full.error_slice], atol=1e-6)


def test_logit_nodes_follow_desired_probability(small_probe, ids):
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, D_SAE, seed=1)
    graph = attribution_graph(small_probe, ids, transcoders=tcs, max_logits=50, desired_logit_prob=0.5)
    probs = torch.softmax(small_probe(ids[None])[0, -1].double(), -1)
    top = torch.sort(probs, descending=True)
    n = int((torch.cumsum(top.values, 0) < 0.5).sum()) + 1
    assert graph.logit_tokens == top.indices[:n].tolist()
    assert torch.allclose(graph.logit_probabilities.double(), top.values[:n], atol=1e-6)
    logits = small_probe(ids[None])[0, -1]
    assert torch.allclose(graph.node_values[graph.logit_slice], (logits - logits.mean())[graph.logit_tokens], atol=1e-5)


def test_replacement_with_every_source_is_the_model(small_probe, ids):
    """The frozen replacement pass, given the prompt's embedding and writes, reproduces the model's stream."""
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, D_SAE, seed=1, skip=True)
    from gpt2probe.graphs.attribute import RowComputer, active_features
    from gpt2probe.tokens import from_tensor

    run = capture_prompt(small_probe, from_tensor(ids, n_ctx=SMALL.n_positions, d_vocab=SMALL.vocab_size))
    feats, errors = active_features(run, tcs)
    computer = RowComputer(small_probe, run, tcs, feats, errors)
    full = replacement_pass(small_probe, run, tcs, embed=run.embed, written=computer.written)
    for layer in range(SMALL.n_layer):
        assert torch.allclose(full.mlp_in[layer][0], run.mlp_in[layer], atol=1e-5)
    logits = full.final[0, -1] @ small_probe.W_U
    assert torch.allclose(logits, run.logits, atol=1e-4)


def test_written_out_backward_equals_autograd_through_the_hooked_model(small_probe, ids):
    """Every row (logits and features of every layer, skip connections on) equals autograd through the frozen HF model."""
    from einops import einsum

    from gpt2probe.graphs.attribute import RowComputer, active_features
    from gpt2probe.tokens import from_tensor

    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, D_SAE, seed=6, skip=True)
    run = capture_prompt(small_probe, from_tensor(ids, n_ctx=SMALL.n_positions, d_vocab=SMALL.vocab_size))
    feats, errors = active_features(run, tcs)
    computer = RowComputer(small_probe, run, tcs, feats, errors)
    n_feat, n_pos = len(feats.layer), run.ids.shape[0]
    # targets: two logit directions at the last position, then every feature (all layers and positions)
    vectors = torch.cat([small_probe.W_U[:, :2].T, computer.enc])
    layers = torch.cat([torch.full((2,), SMALL.n_layer), feats.layer])
    positions = torch.cat([torch.full((2,), n_pos - 1), feats.pos])
    fast = torch.cat([computer.rows(layers[i:i + 5], positions[i:i + 5], vectors[i:i + 5]) for i in range(0, len(layers), 5)])
    n = len(layers)
    p = replacement_pass(small_probe, run, tcs, embed=run.embed, written=computer.written, batch=n, grad=True)
    objective = sum(((p.final if int(layers[i]) == SMALL.n_layer else p.mlp_in[int(layers[i])])[i, int(positions[i])]
                     * vectors[i]).sum() for i in range(n))
    grads = torch.autograd.grad(objective, [p.embed_anchor, *p.mlp_anchors], allow_unused=True)
    slow = torch.zeros_like(fast)
    slow[:, -n_pos:] = einsum(grads[0], run.embed, "b p d, p d -> b p")
    for layer in range(SMALL.n_layer):
        g = grads[layer + 1]
        if g is None:
            continue
        slow[:, n_feat + layer * n_pos:n_feat + (layer + 1) * n_pos] = einsum(g, errors[layer], "b p d, p d -> b p")
        mask = feats.layer == layer
        slow[:, :n_feat][:, mask] = einsum(g[:, feats.pos[mask]], computer.dec[mask], "b f d, f d -> b f")
    assert float(slow.abs().max()) > 1e-2
    assert torch.allclose(fast, slow.detach(), atol=1e-5, rtol=1e-4)


def test_edges_equal_single_source_passes(small_probe, ids):
    """Each edge, by backward pass, equals the replacement model run with that one source on, minus the constant."""
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, D_SAE, seed=4, skip=True)
    graph = attribution_graph(small_probe, ids, transcoders=tcs, batch_size=5)
    from gpt2probe.tokens import from_tensor

    run = capture_prompt(small_probe, from_tensor(ids, n_ctx=SMALL.n_positions, d_vocab=SMALL.vocab_size))
    zero_embed, zero_written = torch.zeros_like(run.embed), torch.zeros_like(run.mlp_in)
    last_layer = [i for i in range(graph.n_features) if graph.features[i, 0] == SMALL.n_layer - 1]
    target = last_layer[0]
    t_layer, t_pos, t_feat = graph.features[target].tolist()

    def target_value(embed, written) -> float:
        out = replacement_pass(small_probe, run, tcs, embed=embed, written=written)
        return float(out.mlp_in[t_layer][0, t_pos] @ tcs[t_layer].W_enc[:, t_feat] + tcs[t_layer].b_enc[t_feat])

    base = target_value(zero_embed, zero_written)
    assert abs(base - float(graph.constant[target])) < 1e-4
    embed = zero_embed.clone()
    embed[1] = run.embed[1]
    assert abs(target_value(embed, zero_written) - base - float(graph.adjacency[target, graph.token_node(1)])) < 1e-4
    written = zero_written.clone()
    written[0, 2] = run.mlp_out[0, 2] - tcs[0].forward(run.mlp_in[0, 2])
    assert abs(target_value(zero_embed, written) - base - float(graph.adjacency[target, graph.error_node(0, 2)])) < 1e-4
    source = next(i for i in range(graph.n_features) if graph.features[i, 0] < t_layer and graph.features[i, 1] <= t_pos)
    s_layer, s_pos, s_feat = graph.features[source].tolist()
    written = zero_written.clone()
    written[s_layer, s_pos] = graph.activations[source] * tcs[s_layer].W_dec[s_feat]
    assert abs(target_value(zero_embed, written) - base - float(graph.adjacency[target, source])) < 1e-4


def test_toy_graph_finds_exactly_the_known_path():
    model = toy_model()
    probe = gpt2probe.load(model)
    graph = attribution_graph(probe, torch.tensor(PROMPT), transcoders=toy_transcoders(model), max_logits=1)
    assert graph.logit_tokens == [TOKEN_OUT]
    last = len(PROMPT) - 1
    assert graph.features.tolist() == [[0, last, 0], [1, last, 0]]
    a, b = graph.feature_node(0, last, 0), graph.feature_node(1, last, 0)
    emb, logit = graph.token_node(last), graph.logit_node(TOKEN_OUT)
    big = graph.adjacency.abs() > 1e-4 * float(graph.adjacency.abs().max())
    assert sorted(map(tuple, big.nonzero().tolist())) == sorted([(a, emb), (b, a), (logit, b)])
    # the first edge by hand: A = 5 <LN(3 u_in), u_in> - 5, and LN(3 u_in) = sqrt(8) u_in (up to eps)
    expected = 5 * (8 / (1 + 8 * 1e-5 / 9)) ** 0.5
    assert abs(float(graph.adjacency[a, emb]) - expected) < 1e-3
    assert identity_gap(graph) < 1e-4
    assert graph.replacement_score() > 0.999 and graph.completeness_score() > 0.999
    pruned = graph.prune(0.8, 0.98)
    kept_features = [graph.describe(i) for i in range(graph.n_features) if pruned.node_mask[i]]
    assert kept_features == ["L0 f0 @2", "L1 f0 @2"]
    assert not bool(pruned.node_mask[graph.error_slice].any())



def test_node_indices_outside_the_graph_are_refused_not_wrapped():
    """error_node, token_node and describe add indices: -1 or n_pos would silently name a neighbouring node."""
    model = toy_model()
    graph = attribution_graph(gpt2probe.load(model), torch.tensor(PROMPT), transcoders=toy_transcoders(model), max_logits=1)
    n_pos, n_layers = graph.n_pos, graph.n_layers
    assert graph.error_node(0, 0) == graph.error_slice.start and graph.error_node(n_layers - 1, n_pos - 1) == graph.error_slice.stop - 1
    assert graph.token_node(0) == graph.token_slice.start and graph.token_node(n_pos - 1) == graph.token_slice.stop - 1
    for call in (lambda: graph.error_node(0, -1), lambda: graph.error_node(0, n_pos), lambda: graph.token_node(-1),
                 lambda: graph.token_node(n_pos)):
        with pytest.raises(gpt2probe.PositionError, match=f"position -?[0-9]+ is outside 0..{n_pos - 1}"):
            call()
    for layer in (-1, n_layers):
        with pytest.raises(gpt2probe.LayerIndexError, match=f"layer {layer} is outside 0..{n_layers - 1}"):
            graph.error_node(layer, 0)
    assert graph.describe(graph.n_nodes - 1).startswith("logit")
    for node in (-1, graph.n_nodes):
        with pytest.raises(InvalidArgumentError, match=f"node {node} is outside 0..{graph.n_nodes - 1}"):
            graph.describe(node)

def test_transcoders_are_checked(small_probe, ids):
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, D_SAE, seed=1)
    with pytest.raises(InvalidArgumentError, match=r"no transcoder for layer\(s\) \[2\]"):
        attribution_graph(small_probe, ids, transcoders=tcs[:2])
    with pytest.raises(InvalidArgumentError, match="two transcoders for layer 1"):
        attribution_graph(small_probe, ids, transcoders=[tcs[0], tcs[1], tcs[1]])
    bad = ToyTranscoder(tcs[2].W_enc[:-1], tcs[2].b_enc, tcs[2].W_dec, tcs[2].b_dec, 2)
    with pytest.raises(ShapeError, match="W_enc has shape"):
        attribution_graph(small_probe, ids, transcoders=[tcs[0], tcs[1], bad])

    class Shifted(ToyTranscoder):  # SAELens's apply_b_dec_to_input: not x @ W_enc + b_enc
        def encode(self, x):
            return super().encode(x - self.b_dec)

    shifted = Shifted(tcs[2].W_enc, tcs[2].b_enc, tcs[2].W_dec, tcs[2].b_dec + 1.0, 2)
    with pytest.raises(UnsupportedError, match="elementwise gate"):
        attribution_graph(small_probe, ids, transcoders=[tcs[0], tcs[1], shifted])
    # string keys used to read "the transcoder given for layer 0 says cfg.layer = 0". This run's type-checking
    # import hook refuses them at the call; __wrapped__ is the function a user without that hook calls.
    plain = getattr(attribution_graph, "__wrapped__", attribution_graph)
    with pytest.raises(InvalidTypeError, match=r"keyed by integer layer, got str '0' \(write \{0: transcoder\}\)"):
        plain(small_probe, ids, transcoders={str(i): tc for i, tc in enumerate(tcs)})
    with pytest.raises(InvalidTypeError, match="keyed by integer layer, got float 0.0; valid layers: 0..2"):
        plain(small_probe, ids, transcoders={float(i): tc for i, tc in enumerate(tcs)})
    with pytest.raises(InvalidTypeError, match="keyed by integer layer, got bool"):
        plain(small_probe, ids, transcoders={False: tcs[0], 1: tcs[1], 2: tcs[2]})
    ordered = check_transcoders({np.int64(i): tc for i, tc in enumerate(tcs)}, n_layers=SMALL.n_layer,
                                d_model=SMALL.n_embd, dtype=small_probe.cfg.dtype, device=small_probe.cfg.device)
    assert len(ordered) == len(tcs) and all(a is b for a, b in zip(ordered, tcs))  # NumPy integer keys are layers
    with pytest.raises(PromptError, match="batch of 2"):
        attribution_graph(small_probe, random_ids(SMALL, 2, 5, seed=0), transcoders=tcs)
    assert count_torch_hooks(small_probe.model) == 0


def test_hooks_are_removed_when_the_replacement_pass_fails(small_probe, ids, monkeypatch):
    from gpt2probe.graphs import replacement

    class Boom(Exception):
        pass

    def failing_skip(tc, x):
        raise Boom

    monkeypatch.setattr(replacement, "skip_out", failing_skip)  # raises inside a hook, mid forward pass
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, D_SAE, seed=1, skip=True)
    with pytest.raises(Boom):
        attribution_graph(small_probe, ids, transcoders=tcs)
    assert count_torch_hooks(small_probe.model) == 0
