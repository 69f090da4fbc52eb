"""The shipped tiny-english's attribution graph of a copying prompt runs through its learned induction circuit.

Issue 22's validation on a trained model: on ``<|endoftext|>`` + 12 random common tokens + the
same tokens again up to the last one (only copying predicts the next token), with the shipped
transcoders, the graph (1) keeps the decomposition identity, (2) predicts the copied token, and
(3) its strongest edge into that logit starts at the copied token's embedding at its earlier
position, a cross-position edge that, with attention frozen, an OV path must carry: the heads
attending from the last position to that one are the induction heads that ``head_scores`` finds
on their own, independently of the graph (``tools/graph_induction.py`` prints the same story;
docs/attribution-graphs.md reads it).
"""

from __future__ import annotations

import pytest
import torch
from graph_helpers import identity_gap

import gpt2probe
from gpt2probe import head_scores
from gpt2probe import names as N

from models import repeated_tokens

BLOCK = 12


@pytest.fixture(scope="module")
def prompt(tiny_english) -> torch.Tensor:
    """``<|endoftext|>``, BLOCK tokens, the same again up to the last one: the next token is the copy's."""
    return repeated_tokens(1, BLOCK, seed=0, bos=tiny_english.tokenizer.bos_token_id)[0, :-1]


@pytest.fixture(scope="module")
def graph(tiny_english, prompt):
    return gpt2probe.attribution_graph(tiny_english, prompt, transcoders=gpt2probe.load_transcoders("tiny-english"))


def test_the_graph_keeps_its_identity_on_the_shipped_transcoders(graph):
    assert identity_gap(graph) < 1e-4


def test_the_graph_predicts_the_copy(tiny_english, graph, prompt):
    copied = int(prompt[BLOCK])  # the token that followed the earlier copy of the last token
    assert graph.logit_tokens[0] == copied
    assert float(graph.logit_probabilities[0]) > 0.5
    assert int(tiny_english(prompt[None])[0, -1].argmax()) == copied


def test_the_strongest_edge_into_the_copy_crosses_through_the_induction_heads(tiny_english, graph, prompt):
    last = len(prompt) - 1
    top_logit = graph.logit_slice.start
    strongest = int(graph.adjacency[top_logit].abs().argmax())
    assert strongest == graph.token_node(BLOCK), graph.describe(strongest)  # emb of the copied token, 11 positions back
    # Which heads carry it: the frozen patterns from the last position to BLOCK, against the
    # induction heads found from head scores alone (repeated random tokens, no graph).
    layers = range(tiny_english.cfg.n_layers)
    _, cache = tiny_english.run_with_cache(prompt[None], names=[N.pattern(layer) for layer in layers])
    weight = torch.stack([cache[N.pattern(layer)][0, :, last, BLOCK] for layer in layers])
    repeated = repeated_tokens(8, 20, seed=1, bos=tiny_english.tokenizer.bos_token_id)
    _, rep_cache = tiny_english.run_with_cache(repeated, names=head_scores.PATTERN_NAMES)
    induction = head_scores.induction_scores_from_cache(rep_cache, 20)
    top_two = set(induction.flatten().argsort(descending=True)[:2].tolist())
    carriers = weight.flatten().argsort(descending=True)[:2].tolist()
    assert set(carriers) == top_two, (weight, induction)
    assert float(weight.flatten()[carriers].min()) > 0.5
