"""Feature interventions in the real model, and the attribution graph's predictions of their effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graph_helpers import PROMPT, TOKEN_OUT, random_transcoders, toy_model, toy_transcoders

import gpt2probe
from gpt2probe.errors import InvalidArgumentError, InvalidTypeError, LayerIndexError, PositionError
from gpt2probe.graphs import attribution_graph
from gpt2probe.graphs.intervene import intervene_features
from gpt2probe.hooks import count_torch_hooks

from models import SMALL, random_ids


def demeaned(logits: torch.Tensor, token: int) -> float:
    last = logits[0, -1].double()
    return float(last[token] - last.mean())


def predicted_ablation(graph, source: int, logit_node: int) -> float:
    """The change of a logit when ``source`` is set to zero, propagated linearly through the graph.

    Downstream features move by their pre-activation change (valid while they stay active);
    errors and tokens stay fixed. ``J[t, u] = A[t, u] / a_u`` is the effect per unit of feature u.
    """
    a = graph.adjacency.double()
    n_f = graph.n_features
    scale = torch.ones(graph.n_nodes, dtype=torch.float64)
    scale[:n_f] = graph.activations.double()
    j = torch.zeros_like(a)
    j[:, :n_f] = a[:, :n_f] / scale[:n_f]
    j[:, source] = 0
    j[:, n_f:] = 0
    direct = -a[:, source]
    change = torch.linalg.solve(torch.eye(graph.n_nodes, dtype=torch.float64) - j, direct)
    return float(change[logit_node])


def test_setting_a_feature_to_its_own_value_changes_nothing(small_probe):
    ids = random_ids(SMALL, 1, 7, seed=2)[0]
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, 37, seed=1, skip=True)
    graph = attribution_graph(small_probe, ids, transcoders=tcs)
    layer, pos, feat = graph.features[0].tolist()
    clean = small_probe(ids[None])
    same = small_probe.intervene_features(ids, tcs, {(layer, pos, feat): float(graph.activations[0])})
    assert torch.allclose(same, clean, atol=1e-5)
    frozen = small_probe.intervene_features(ids, tcs, {}, freeze_attention=True)
    assert torch.allclose(frozen, clean, atol=1e-5)
    assert count_torch_hooks(small_probe.model) == 0


def test_a_last_layer_feature_moves_the_logit_by_its_edge(small_probe):
    """With attention and LayerNorm frozen, ablating a last-layer feature at the last position changes the
    demeaned logit by exactly minus its edge; in the real model, by about that much and in that direction."""
    ids = random_ids(SMALL, 1, 7, seed=2)[0]
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, 37, seed=1, skip=True)
    graph = attribution_graph(small_probe, ids, transcoders=tcs, max_logits=1)
    token, logit = graph.logit_tokens[0], graph.logit_slice.start
    last = [i for i in range(graph.n_features)
            if graph.features[i, 0] == SMALL.n_layer - 1 and graph.features[i, 1] == graph.n_pos - 1]
    assert last
    strongest = max(last, key=lambda i: abs(float(graph.adjacency[logit, i])))
    edge = float(graph.adjacency[logit, strongest])
    key = tuple(graph.features[strongest].tolist())
    clean = demeaned(small_probe(ids[None]), token)
    frozen = demeaned(small_probe.intervene_features(ids, tcs, {key: 0.0}, freeze_attention=True), token)
    assert abs((frozen - clean) - (-edge)) < 1e-4
    real = demeaned(small_probe.intervene_features(ids, tcs, {key: 0.0}), token) - clean
    assert real * -edge > 0 and 0.5 < real / -edge < 2


def test_the_toy_path_predicts_its_ablations():
    model = toy_model()
    probe = gpt2probe.load(model)
    tcs = toy_transcoders(model)
    prompt = torch.tensor(PROMPT)
    graph = attribution_graph(probe, prompt, transcoders=tcs, max_logits=1)
    last = len(PROMPT) - 1
    logit = graph.logit_node(TOKEN_OUT)
    clean = demeaned(probe(prompt[None]), TOKEN_OUT)
    for layer in (0, 1):
        source = graph.feature_node(layer, last, 0)
        predicted = predicted_ablation(graph, source, logit)
        real = demeaned(probe.intervene_features(prompt, tcs, {(layer, last, 0): 0.0}), TOKEN_OUT) - clean
        assert predicted < -1 and real < -1  # the path raises the logit: ablating it lowers it
        assert 0.5 < real / predicted < 2, (layer, real, predicted)
    # doubling the first feature with LayerNorm frozen: the path is linear while both features are active
    a = graph.feature_node(0, last, 0)
    boosted = probe.intervene_features(prompt, tcs, {(0, last, 0): 2 * float(graph.activations[a])}, freeze_attention=True)
    assert abs(demeaned(boosted, TOKEN_OUT) - clean - (-predicted_ablation(graph, a, logit))) < 1e-3


def test_interventions_are_checked(small_probe):
    ids = random_ids(SMALL, 1, 5, seed=2)[0]
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, 37, seed=1)
    with pytest.raises(LayerIndexError):
        small_probe.intervene_features(ids, tcs, {(3, 0, 0): 0.0})
    with pytest.raises(PositionError):
        small_probe.intervene_features(ids, tcs, {(0, 5, 0): 0.0})
    with pytest.raises(InvalidArgumentError, match="feature 37"):
        small_probe.intervene_features(ids, tcs, {(0, 1, 37): 0.0})
    with pytest.raises(InvalidArgumentError, match="no transcoder was given for layer 2"):
        small_probe.intervene_features(ids, tcs[:2], {(2, 1, 0): 0.0})
    with pytest.raises(InvalidArgumentError, match="finite"):
        small_probe.intervene_features(ids, tcs, {(0, 1, 0): float("nan")})
    with pytest.raises(InvalidTypeError):
        small_probe.intervene_features(ids, tcs, {(0, 1): 0.0})
    assert count_torch_hooks(small_probe.model) == 0


def test_numpy_and_tensor_integer_keys_are_indices_and_bools_floats_and_repeats_are_refused(small_probe):
    """A key (or value) made from ``argmax``/``topk``, a tensor or NumPy was refused as not an integer (a number)."""
    ids = random_ids(SMALL, 1, 5, seed=2)[0]
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, 37, seed=1)
    want = small_probe.intervene_features(ids, tcs, {(1, 2, 3): 0.5, (2, 4, 36): -1.0})
    assert not torch.allclose(want, small_probe.run_with_hooks(ids), atol=1e-4)  # the edit shows
    for layer, pos, feat in [(np.int64(1), np.int32(2), np.int16(3)), (torch.tensor(1), torch.tensor(2), torch.tensor(3))]:
        got = small_probe.intervene_features(ids, tcs, {(layer, pos, feat): 0.5, (2, 4, 36): -1.0})
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for bad in [(True, 2, 3), (1, 2.0, 3), (1, 2, np.float64(3)), (1, 2, torch.tensor(3.0)),
                (1, 2, torch.tensor(True)), (1, 2, torch.tensor([3]))]:
        with pytest.raises(InvalidTypeError, match="of integers"):
            small_probe.intervene_features(ids, tcs, {bad: 0.0})
    # values read off a tensor or NumPy are numbers too (they were refused as not finite numbers)
    plain = getattr(intervene_features, "__wrapped__", intervene_features)  # as called without this run's type checker
    got = plain(small_probe, ids, tcs, {(1, 2, 3): torch.tensor(0.5), (2, 4, 36): np.float32(-1.0)})
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    for bad in (torch.tensor(True), torch.tensor([0.5]), np.float32("nan"), torch.tensor(float("inf"))):
        with pytest.raises(InvalidArgumentError, match="the value must be a finite number"):
            plain(small_probe, ids, tcs, {(1, 2, 3): bad})
    # a single transcoder says how to pass it
    with pytest.raises(InvalidTypeError, match=r"got ToyTranscoder: pass transcoders=\[tc\]"):
        plain(small_probe, ids, tcs[1], {(1, 2, 3): 0.5})
    # a tensor hashes by identity: (tensor(1), 2, 3) and (1, 2, 3) are two dict keys that would shift one feature twice
    with pytest.raises(InvalidArgumentError, match=r"intervention \(1, 2, 3\) is given twice"):
        small_probe.intervene_features(ids, tcs, {(1, 2, 3): 0.5, (torch.tensor(1), 2, 3): 0.5})
    assert count_torch_hooks(small_probe.model) == 0


def test_a_transcoder_that_rescales_by_decoder_norms_is_refused(small_probe):
    """Its decode divides each activation by ||W_dec[f]||: an intervention computed as value * W_dec[f] was off by that norm.

    Ablating feature f must change the MLP output by -(a_f / ||W_dec[f]||) W_dec[f], as its own decode says; it
    changed it by -a_f W_dec[f], silently.
    """
    ids = random_ids(SMALL, 1, 5, seed=2)[0]
    tc = gpt2probe.Transcoder(gpt2probe.SAEConfig.for_transcoder(1, d_model=SMALL.n_embd, d_sae=37, architecture="topk",
                                                                  k=5, rescale_acts_by_decoder_norm=True))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        tc.W_dec.mul_(1 + 2 * torch.rand(37, 1, generator=gen))  # rows of norm 1..3, so the norm matters
    tcs = random_transcoders(SMALL.n_layer, SMALL.n_embd, 37, seed=1)
    tcs[1] = tc
    for run in (lambda: small_probe.intervene_features(ids, tcs, {(1, 2, 0): 0.0}),
                lambda: attribution_graph(small_probe, ids, transcoders=tcs)):
        with pytest.raises(gpt2probe.UnsupportedError, match="rescale_acts_by_decoder_norm=True"):
            run()
    assert count_torch_hooks(small_probe.model) == 0
