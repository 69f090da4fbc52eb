"""Ablation: knocking out heads, MLPs and neurons, checked against weight surgery and hand-written hooks.

Ground truth comes from the hand-built toy model (L1H0 is its induction head) and from
computations written here independently: zeroed weights in a copy of the model, means
taken prompt by prompt over real tokens, and replacements chosen row by row.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import gpt2probe
from gpt2probe import names as N
from gpt2probe.errors import LayerIndexError
from gpt2probe.hooks import count_torch_hooks
from gpt2probe.interventions import ablate, ablation_hooks
from gpt2probe.interventions.ablation import draw_sources
from gpt2probe.toy import repeated_random_tokens

from models import assert_close

HALF = 13
PROMPTS = ["The cat sat on the mat", "Hello", "A much longer prompt about the weather in Paris today"]


@pytest.fixture(scope="module")
def repeated():
    return repeated_random_tokens(6, HALF, 64, seed=5)


def half_losses(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[float, float]:
    """Mean next-token loss predicting tokens 2..L of the first copy, and of the second copy."""
    nll = -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    return nll[:, 1:HALF].mean().item(), nll[:, HALF + 1 : 2 * HALF].mean().item()


def with_weights(probe, edit):
    """A probe on a copy of the model, with ``edit(model)`` applied to its weights."""
    model = copy.deepcopy(probe.model)
    with torch.no_grad():
        edit(model)
    return gpt2probe.load(model, device="cpu")


# -- the toy induction circuit ---------------------------------------------------------------

def test_ablating_the_induction_head_destroys_copying(toy, repeated):
    first, second = half_losses(toy(repeated), repeated)
    assert first == pytest.approx(math.log(64), abs=1e-3)
    assert second < 1e-3
    with ablate(toy, heads=[(1, 0)]):
        ablated_first, ablated_second = half_losses(toy(repeated), repeated)
    assert ablated_second == pytest.approx(ablated_first, abs=1e-3)
    assert ablated_second == pytest.approx(math.log(64), abs=1e-3)


def test_ablating_the_previous_token_head_destroys_copying(toy, repeated):
    with ablate(toy, heads=[(0, 0)]):
        _, second = half_losses(toy(repeated), repeated)
    assert second == pytest.approx(math.log(64), abs=1e-3)


@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
def test_ablating_an_unused_head_changes_nothing(toy, repeated, mode):
    clean = toy(repeated)
    with ablate(toy, heads=[(1, 2), (0, 3)], mode=mode, reference=repeated, seed=0):
        ablated = toy(repeated)
    assert_close(ablated, clean, 1e-5, "logits")


# -- zero ablation against weight surgery ------------------------------------------------------

def test_zero_ablation_equals_zeroed_weights(small_probe):
    """Zeroing z of heads, an MLP's output and single neurons = zeroing the weights they pass through."""
    cfg = small_probe.cfg
    d_head = cfg.d_head
    heads, mlps, neurons = [(0, 1), (2, 4), (2, 0)], [1], [(0, 7), (0, 100), (2, 3)]

    def edit(model):
        for layer, head in heads:
            model.transformer.h[layer].attn.c_proj.weight[head * d_head : (head + 1) * d_head] = 0
        for layer in mlps:
            model.transformer.h[layer].mlp.c_proj.weight.zero_()
            model.transformer.h[layer].mlp.c_proj.bias.zero_()
        for layer, neuron in neurons:
            model.transformer.h[layer].mlp.c_proj.weight[neuron] = 0

    surgery = with_weights(small_probe, edit)
    ids = random_ids_small(small_probe)
    with ablate(small_probe, heads=heads, mlps=mlps, neurons=neurons):
        ablated = small_probe(ids)
    assert_close(ablated, surgery(ids), 1e-4, "logits")
    assert not torch.allclose(ablated, small_probe(ids), atol=1e-3)


def random_ids_small(probe, batch=3, pos=9, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, probe.cfg.d_vocab, (batch, pos), generator=gen)


# -- mean and resample against hand computations ------------------------------------------------

def test_mean_ablation_equals_hand_computed_means(vocab_probe):
    """Means over the real tokens of a left-padded reference batch, computed prompt by prompt."""
    probe = vocab_probe
    heads, mlps, neurons = [(0, 2), (1, 0), (1, 1)], [0], [(1, 5), (1, 60)]
    names = [N.z(0), N.z(1), N.mlp_out(0), N.mlp_post(1)]
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for prompt in PROMPTS:  # one prompt at a time: no padding anywhere
        _, cache = probe.run_with_cache(prompt, names=names)
        for name in names:
            rows[name].append(cache[name][0])
    means = {name: torch.cat(rows[name]).mean(0) for name in names}

    def replace(index):
        def hook(activation, point):
            out = activation.clone()
            chosen = slice(None) if index is None else index
            out[:, :, chosen] = means[point.name][chosen]
            return out
        return hook

    target = ["Where is the", "The weather in Paris is nice"]
    expected = probe.run_with_hooks(target, [(N.z(0), replace([2])), (N.z(1), replace([0, 1])),
                                             (N.mlp_out(0), replace(None)), (N.mlp_post(1), replace([5, 60]))])
    with ablate(probe, heads=heads, mlps=mlps, neurons=neurons, mode="mean", reference=PROMPTS):
        got = probe(target)
    assert_close(got, expected, 1e-4, "mean-ablated logits")
    assert not torch.allclose(got, probe(target), atol=1e-3)


def test_resample_ablation_equals_hand_computed_replacements(small_probe):
    """Each row takes every ablated activation from one other reference row, drawn with the seed."""
    probe = small_probe
    reference = random_ids_small(probe, batch=5, pos=8, seed=2)
    run = random_ids_small(probe, batch=5, pos=8, seed=3)
    names = [N.z(1), N.mlp_post(2)]
    _, ref_cache = probe.run_with_cache(reference, names=names)

    def from_row(r):
        def hook(activation, point):
            out = activation.clone()
            if point.name == N.z(1):
                out[:, :, 3] = ref_cache[point.name][r, :, 3]
            else:
                out[:, :, [4, 9]] = ref_cache[point.name][r][:, [4, 9]]
            return out
        return hook

    with ablate(probe, heads=[(1, 3)], neurons=[(2, 9), (2, 4)], mode="resample", reference=reference, seed=7):
        got = probe(run)
    expected_rows = draw_sources(5, 5, torch.Generator().manual_seed(7))
    for b in range(5):
        candidates = {r: probe.run_with_hooks(run[b : b + 1], [(name, from_row(r)) for name in names])[0]
                      for r in range(5)}
        matches = [r for r, logits in candidates.items() if torch.allclose(got[b], logits, atol=1e-4)]
        assert matches == [int(expected_rows[b])], f"row {b}: matches {matches}, draw {int(expected_rows[b])}"
        assert matches[0] != b  # never the same example
    with ablate(probe, heads=[(1, 3)], neurons=[(2, 9), (2, 4)], mode="resample", reference=reference, seed=7):
        assert torch.equal(probe(run), got)  # the seed fixes the draw


def test_draw_sources_never_picks_the_same_row():
    gen = torch.Generator().manual_seed(0)
    for n in (2, 3, 7):
        for _ in range(20):
            rows = draw_sources(n, n, gen)
            assert (rows != torch.arange(n)).all() and (rows >= 0).all() and (rows < n).all()
    assert draw_sources(4, 1, gen).tolist() == [0, 0, 0, 0]


def test_resample_needs_matching_positions(small_probe):
    reference = random_ids_small(small_probe, batch=3, pos=6)
    with ablate(small_probe, heads=[(0, 0)], mode="resample", reference=reference, seed=0):
        with pytest.raises(ValueError, match=r"\(6, 5, 12\).*\(9, 5, 12\)"):
            small_probe(random_ids_small(small_probe, batch=3, pos=9))
    assert count_torch_hooks(small_probe.model) == 0


# -- hygiene and errors --------------------------------------------------------------------------

def test_hooks_are_removed_even_when_the_body_raises(small_probe):
    assert count_torch_hooks(small_probe.model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with ablate(small_probe, heads=[(0, 0)], mlps=[1], neurons=[(2, 2)]):
            assert count_torch_hooks(small_probe.model) > 0
            raise RuntimeError("boom")
    assert count_torch_hooks(small_probe.model) == 0


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(heads=[(3, 0)]), LayerIndexError, r"layers 0\.\.2"),
    (dict(heads=[(0, 5)]), LayerIndexError, r"heads 0\.\.4"),
    (dict(mlps=[-1]), LayerIndexError, r"layers 0\.\.2"),
    (dict(neurons=[(0, 240)]), LayerIndexError, r"neurons 0\.\.239"),
    (dict(heads=[(0, 0)], mode="average"), ValueError, "'zero', 'mean', 'resample'"),
    (dict(heads=[(0, 0)], mode="mean"), ValueError, "reference"),
])
def test_errors_name_what_is_valid(small_probe, kwargs, error, message):
    with pytest.raises(error, match=message):
        ablation_hooks(small_probe, **kwargs)
    assert count_torch_hooks(small_probe.model) == 0


def test_nothing_to_ablate_is_a_no_op(small_probe):
    ids = random_ids_small(small_probe)
    before = small_probe(ids)
    with ablate(small_probe):
        assert count_torch_hooks(small_probe.model) == 0
        assert torch.equal(small_probe(ids), before)


def test_hook_factories_name_an_index_outside_the_axis_they_ablate(small_probe):
    """zero_ablation_hook([9999]) on an SAE's features (the way to ablate one inside ``with probe.saes``) was
    torch's 'index 9999 is out of bounds for dimension 0 with size 40', naming neither the hook nor the range."""
    from gpt2probe.interventions import mean_ablation_hook, resample_ablation_hook, zero_ablation_hook

    ids = random_ids_small(small_probe)
    d_sae = 40
    sae = gpt2probe.SAE(gpt2probe.SAEConfig(d_in=small_probe.cfg.d_model, d_sae=d_sae, hook_name="blocks.1.hook_resid_post"))
    name = "blocks.1.hook_resid_post.hook_sae_acts_post"
    with small_probe.saes([sae]):
        spliced = count_torch_hooks(small_probe.model)
        _, cache = small_probe.run_with_cache(ids, [name])
        reference = cache[name]
        makers = {"zero": lambda index: zero_ablation_hook(index),
                  "mean": lambda index: mean_ablation_hook(torch.zeros(d_sae), index),
                  "resample": lambda index: resample_ablation_hook(reference, torch.zeros(ids.shape[0], dtype=torch.long), index)}
        for make in makers.values():
            for index in ([d_sae], [0, 9999], [-d_sae - 1]):
                with pytest.raises(gpt2probe.InvalidArgumentError, match=rf"index {index[-1]} is outside {name!r}'s third "
                                                                         rf"axis of {d_sae} entries \(valid: 0\.\.{d_sae - 1}"):
                    small_probe.run_with_hooks(ids, {name: make(index)})
            assert count_torch_hooks(small_probe.model) == spliced
            # the last entry, as Python indexes: the same run as naming it
            torch.testing.assert_close(small_probe.run_with_hooks(ids, {name: make([-1])}),
                                       small_probe.run_with_hooks(ids, {name: make([d_sae - 1])}), rtol=0, atol=0)
    assert count_torch_hooks(small_probe.model) == 0
