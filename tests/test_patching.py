"""Activation patching, checked against one-at-a-time ``run_with_hooks`` loops and exact identities.

The loops here patch one activation per forward pass with hooks written out for each kind,
so they share nothing with :func:`patch`'s stacked batches. Identities that need no
loop: patching the whole layer-0 residual stream gives the clean run exactly, and
positions before the first differing token cannot change anything.
"""

from __future__ import annotations

import math

import pytest
import torch

from gpt2probe import names as N
from gpt2probe.errors import PromptError
from gpt2probe.hooks import count_torch_hooks
from gpt2probe.interventions import ablate, patch, patch_hook
from gpt2probe.toy import repeated_random_tokens

from models import assert_close

HALF = 11
IOI_CLEAN = ["When Mary and John went to the store, John gave a drink to", "Then Alice and Bob met; Bob thanked"]
IOI_CORRUPTED = ["When Mary and John went to the store, Mary gave a drink to", "Then Alice and Bob met; Alice thanked"]


def second_half_logprob(tokens: torch.Tensor):
    """Metric: mean log-probability of ``tokens``' second copy (its tokens 2..L), a fixed target."""
    def metric(logits):
        logprobs = logits[:, HALF + 1 : 2 * HALF].log_softmax(-1)
        return logprobs.gather(-1, tokens[:, HALF + 2 :, None]).mean()
    return metric


def odd_metric(logits):
    """A metric that is neither linear nor a mean over the batch."""
    return logits[:, -1].log_softmax(-1)[:, 3].sum() - logits[:, -2, 5].mean()


# -- the toy induction circuit -----------------------------------------------------------------

def test_patching_the_induction_head_into_an_ablated_run_restores_copying(toy):
    tokens = repeated_random_tokens(4, HALF, 64, seed=9)
    metric = second_half_logprob(tokens)
    _, clean = toy.run_with_cache(tokens, names=[N.z(1)])
    with ablate(toy, heads=[(1, 0)]):
        ablated = float(metric(toy(tokens)))
        restored = float(metric(toy.run_with_hooks(tokens, [(N.z(1), patch_hook(clean[N.z(1)], (slice(None), 0)))])))
    assert ablated == pytest.approx(-math.log(64), abs=1e-3)
    assert restored > -1e-3


def test_head_patching_finds_the_induction_head(toy):
    """Clean [BOS, x, x] vs corrupted [BOS, y, x]: only L1H0's output carries the copy."""
    clean = repeated_random_tokens(4, HALF, 64, seed=1)
    corrupted = clean.clone()
    corrupted[:, 1 : HALF + 1] = repeated_random_tokens(4, HALF, 64, seed=2)[:, 1 : HALF + 1]
    result = patch(toy, clean, corrupted, kind="head", metric=second_half_logprob(clean))
    assert result.axis_names == ("layer", "head")
    assert result.clean_metric > -1e-3 and result.corrupted_metric < -math.log(64) + 1e-3
    assert float(result.values[1, 0]) == pytest.approx(1.0, abs=1e-3)
    zero_weight_heads = result.values[:, 1:]
    assert zero_weight_heads.abs().max() < 1e-5


# -- against a hand-written loop of run_with_hooks ------------------------------------------------

def hand_hook(kind: str, cell: tuple[int, ...], source: torch.Tensor):
    """The patch of one cell, written out per kind."""
    def hook(activation, point):
        out = activation.clone()
        if kind in ("head", "head_v"):
            out[:, :, cell[1]] = source[:, :, cell[1]]
        elif kind == "head_pattern":
            out[:, cell[1]] = source[:, cell[1]]
        elif len(cell) == 2:
            out[:, cell[1]] = source[:, cell[1]]
        else:
            out[:] = source
        return out
    return hook


HOOK_OF = {"resid_pre": N.resid_pre, "resid_mid": N.resid_mid, "attn_out": N.attn_out, "mlp_out": N.mlp_out,
           "head": N.z, "head_v": N.v, "head_pattern": N.pattern}


def hand_loop(probe, clean, corrupted, kind, metric, shape, direction):
    base, source = (corrupted, clean) if direction == "denoise" else (clean, corrupted)
    expected = torch.empty(shape)
    for cell in (tuple(c) for c in torch.cartesian_prod(*[torch.arange(n) for n in shape]).reshape(-1, len(shape)).tolist()):
        name = HOOK_OF[kind](cell[0])
        _, cache = probe.run_with_cache(source, names=[name])
        expected[cell] = float(metric(probe.run_with_hooks(base, [(name, hand_hook(kind, cell, cache[name]))])))
    return expected


@pytest.mark.parametrize("kind, per_position, direction", [
    ("resid_pre", True, "denoise"),
    ("resid_mid", True, "noise"),
    ("attn_out", True, "denoise"),
    ("mlp_out", False, "noise"),
    ("head", None, "denoise"),
    ("head_v", None, "noise"),
    ("head_pattern", None, "denoise"),
])
def test_patch_equals_a_loop_of_run_with_hooks(small_probe, kind, per_position, direction):
    probe = small_probe
    gen = torch.Generator().manual_seed(4)
    clean = torch.randint(0, probe.cfg.d_vocab, (2, 6), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2] = (corrupted[:, 2] + 1 + torch.arange(2)) % probe.cfg.d_vocab
    result = patch(probe, clean, corrupted, kind=kind, metric=odd_metric, direction=direction,
                   per_position=bool(per_position), batch_size=4)
    clean_metric, corrupted_metric = float(odd_metric(probe(clean))), float(odd_metric(probe(corrupted)))
    expected = hand_loop(probe, clean, corrupted, kind, odd_metric, tuple(result.values.shape), direction)
    assert result.clean_metric == pytest.approx(clean_metric, abs=1e-4)
    assert result.corrupted_metric == pytest.approx(corrupted_metric, abs=1e-4)
    assert_close(result.raw(), expected, 1e-4, "raw patched metric")
    assert_close(result.values, (expected - corrupted_metric) / (clean_metric - corrupted_metric), 1e-3, "normalised")
    n_layers, n_heads = probe.cfg.n_layers, probe.cfg.n_heads
    assert result.values.shape == ((n_layers, n_heads) if kind.startswith("head") else
                                   (n_layers, 6) if per_position else (n_layers,))
    assert count_torch_hooks(probe.model) == 0


def test_default_metric_on_a_left_padded_batch(vocab_probe):
    """Logit difference at each prompt's last token, averaged, normalised; pads line up pair by pair."""
    probe = vocab_probe
    answer, wrong = [" Mary", " Alice"], [" John", " Bob"]
    ids = lambda ts: torch.tensor([probe.to_single_token(t) for t in ts])  # noqa: E731

    def logit_diff(logits):
        last = logits[:, -1]
        return (last[torch.arange(2), ids(answer)] - last[torch.arange(2), ids(wrong)]).mean()

    clean_t, corrupted_t = probe.to_tokens(IOI_CLEAN), probe.to_tokens(IOI_CORRUPTED)
    assert clean_t.attention_mask[1, 0] == 0  # the second pair is padded
    result = patch(probe, IOI_CLEAN, IOI_CORRUPTED, kind="resid_pre", answer=answer, wrong=wrong, batch_size=7)
    expected = hand_loop(probe, clean_t, corrupted_t, "resid_pre", logit_diff, tuple(result.values.shape), "denoise")
    clean_metric, corrupted_metric = float(logit_diff(probe(clean_t))), float(logit_diff(probe(corrupted_t)))
    assert result.clean_metric == pytest.approx(clean_metric, abs=1e-4)
    assert_close(result.values, (expected - corrupted_metric) / (clean_metric - corrupted_metric), 1e-3, "values")


# -- exact identities --------------------------------------------------------------------------------

def test_whole_layer_zero_stream_gives_the_clean_run_and_unchanged_positions_nothing(vocab_probe):
    probe = vocab_probe
    clean, corrupted = IOI_CLEAN[0], IOI_CORRUPTED[0]
    kwargs = dict(answer=" Mary", wrong=" John")
    whole = patch(probe, clean, corrupted, per_position=False, **kwargs)
    assert float(whole.values[0]) == pytest.approx(1.0, abs=1e-5)
    noised = patch(probe, clean, corrupted, per_position=False, direction="noise", **kwargs)
    assert float(noised.values[0]) == pytest.approx(0.0, abs=1e-5)

    result = patch(probe, clean, corrupted, **kwargs)
    clean_ids, corrupted_ids = probe.to_tokens(clean).ids[0], probe.to_tokens(corrupted).ids[0]
    differ = (clean_ids != corrupted_ids).nonzero()[:, 0].tolist()
    assert len(differ) == 1
    same = [p for p in range(len(clean_ids)) if p not in differ]
    assert result.values[0, same].abs().max() < 1e-5  # layer 0: identical tokens, identical streams
    assert result.values[:, : differ[0]].abs().max() < 1e-5  # before the change: identical at every layer
    assert float(result.values[0, differ[0]]) == pytest.approx(1.0, abs=1e-5)  # the changed token is everything
    assert result.axis_labels[1][differ[0]] == " John/ Mary"


# -- errors ------------------------------------------------------------------------------------------

def test_different_lengths_are_refused_naming_both(vocab_probe):
    clean, corrupted = "When Mary went home", "When Mary and John went home"
    n_clean, n_corrupted = len(vocab_probe.to_str_tokens(clean)), len(vocab_probe.to_str_tokens(corrupted))
    with pytest.raises(PromptError, match=rf"clean prompt has {n_clean} tokens.*corrupted prompt has {n_corrupted}"):
        patch(vocab_probe, clean, corrupted, answer=" Mary", wrong=" John")
    with pytest.raises(PromptError, match=r"\[.*\].*\[.*\]"):
        patch(vocab_probe, [clean, "a b"], [corrupted, "c d"], answer=" Mary", wrong=" John")


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="heads", answer=" Mary", wrong=" John"), "'resid_pre'.*'head'"),
    (dict(), "answer=.*wrong="),
    (dict(direction="backwards", answer=" Mary", wrong=" John"), "'denoise' or 'noise'"),
    (dict(metric=lambda logits: logits[:, -1, :3]), r"one number.*\(1, 3\)"),
])
def test_bad_arguments(vocab_probe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        patch(vocab_probe, IOI_CLEAN[0], IOI_CORRUPTED[0], **kwargs)
    assert count_torch_hooks(vocab_probe.model) == 0


def test_identical_runs_cannot_be_normalised(small_probe):
    ids = torch.arange(5)[None]
    with pytest.raises(ValueError, match="normalize=False"):
        patch(small_probe, ids, ids, metric=odd_metric)
    raw = patch(small_probe, ids, ids, metric=odd_metric, normalize=False, kind="head")
    assert_close(raw.values, torch.full_like(raw.values, float(odd_metric(small_probe(ids)))), 1e-4, "unchanged")
