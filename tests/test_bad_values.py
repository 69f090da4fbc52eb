"""Bad values fail at the public entry with a GPT2ProbeError naming them, never deep in torch or tokenizers."""

from __future__ import annotations

import math

import pytest
import torch

from gpt2probe import GPT2ProbeError, Tokens, direct_logit_attribution, head_scores, logit_lens
from gpt2probe.generation import next_token
from gpt2probe.interventions.patching import patch
from gpt2probe.interventions.steering import steer, steering_hook

from models import SMALL, random_ids

IDS = random_ids(SMALL, 2, 5, seed=9)


def _refused(call, kind, match):
    with pytest.raises(kind, match=match) as info:
        call()
    assert isinstance(info.value, GPT2ProbeError), type(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_steering_vectors_and_scales(small_probe, bad):
    vector = torch.ones(SMALL.n_embd)
    vector[3] = bad
    _refused(lambda: steer(small_probe, 1, vector, 1.0).__enter__(), ValueError, r"non-finite entries.*index \[3\]")
    _refused(lambda: steering_hook(vector, 1.0), ValueError, "non-finite")
    _refused(lambda: steer(small_probe, 1, torch.ones(SMALL.n_embd), bad).__enter__(), ValueError, "alpha must be finite")


def test_steering_positions(small_probe):
    v = torch.ones(SMALL.n_embd)
    _refused(lambda: steering_hook(v, 1.0, positions=[]), ValueError, "positions is empty")
    _refused(lambda: steering_hook(v, 1.0, positions=[True]), TypeError, "must be an integer, got bool")


# Under pytest jaxtyping checks annotated types first (a float for an int), so the entry tests use values
# of the annotated type that are still wrong (0, bool, huge); test_validate_helpers covers the other types.
@pytest.mark.parametrize("k, kind", [(0, ValueError), (True, TypeError), (10**9, ValueError)])
def test_lens_k(small_probe, k, kind):
    _refused(lambda: logit_lens(small_probe, IDS, k=k), kind, "k must be")


@pytest.mark.parametrize("size, kind", [(0, ValueError), (-1, ValueError), (False, TypeError)])
def test_batch_sizes(small_probe, size, kind):
    _refused(lambda: logit_lens(small_probe, IDS, batch_size=size), kind, "batch_size")
    _refused(lambda: patch(small_probe, IDS[:1], IDS[1:], metric=lambda logits: logits[0, -1, 0], batch_size=size),
             kind, "batch_size")


def test_lens_positions(small_probe):
    _refused(lambda: logit_lens(small_probe, IDS, positions=[]), ValueError, "positions is empty")
    _refused(lambda: logit_lens(small_probe, IDS, positions=[0, True]), TypeError, r"positions\[1\] must be an integer")
    _refused(lambda: logit_lens(small_probe, IDS, positions=99), ValueError, "position 99 is outside")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_lens_target_rank_is_never_computed_from_nan(small_probe, bad):
    """NaN logits compare false with everything: the rank would read 0, the top. Refused instead."""
    def poison(activation, hook):
        out = activation.clone()
        out[:, 2, 4] = bad
        return out

    with small_probe.hooks({"blocks.1.hook_resid_pre": poison}):
        _refused(lambda: logit_lens(small_probe, IDS[:1], targets="next"), ValueError,
                 r"residual stream \d+ \(0 = embeddings\) at analysed position \d+ holds NaN or inf")
    result = logit_lens(small_probe, IDS[:1], targets="next")
    assert bool((result[0].target_rank[:, :-1] >= 0).all())
    assert not any(math.isnan(float(p)) for p in result[0].target_prob[:, :-1].flatten())


def test_empty_batches(small_probe, vocab_probe):
    _refused(lambda: small_probe(torch.zeros(0, 4, dtype=torch.long)), ValueError, "empty")
    _refused(lambda: vocab_probe([]), ValueError, "no prompts")
    _refused(lambda: logit_lens(vocab_probe, []), ValueError, "no prompts")
    empty = Tokens(torch.zeros(0, 3, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long))
    _refused(lambda: small_probe(empty), ValueError, "empty")


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff then", "\ud83d"])
def test_lone_surrogates(vocab_probe, text):
    _refused(lambda: vocab_probe(text), ValueError, "lone surrogate")
    _refused(lambda: vocab_probe.to_tokens(["fine", text]), ValueError, "prompt 1 contains a lone surrogate")
    _refused(lambda: vocab_probe.to_str_tokens(text), ValueError, "lone surrogate")
    _refused(lambda: vocab_probe.to_single_token(text), ValueError, "lone surrogate")
    _refused(lambda: logit_lens(vocab_probe, text), ValueError, "lone surrogate")


def test_all_zero_attention_mask_row(small_probe):
    mask = torch.ones_like(IDS)
    mask[1] = 0
    _refused(lambda: small_probe(Tokens(IDS, mask)), ValueError, r"prompt\(s\) \[1\] have an all-zero attention mask")
    _refused(lambda: small_probe.run_with_cache(Tokens(IDS, mask)), ValueError, "all-zero")
    _refused(lambda: logit_lens(small_probe, Tokens(IDS, mask)), ValueError, "all-zero")


def test_malformed_token_objects(small_probe):
    mismatched = Tokens(IDS, torch.ones_like(IDS))
    object.__setattr__(mismatched, "attention_mask", torch.ones(2, 4, dtype=torch.long))  # past jaxtyping's check
    _refused(lambda: small_probe(mismatched), ValueError, "one shape")
    _refused(lambda: small_probe(Tokens(IDS, torch.full_like(IDS, 2))), ValueError, "only 0")
    right_padded = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    _refused(lambda: small_probe(Tokens(IDS, right_padded)), ValueError, "not left padding")
    _refused(lambda: small_probe(Tokens(IDS + SMALL.vocab_size, torch.ones_like(IDS))), ValueError, "must lie in")


@pytest.mark.parametrize("k, kind", [(True, TypeError), (0, ValueError)])
def test_next_token_k(small_probe, k, kind):
    _refused(lambda: next_token(small_probe, IDS, k=k), kind, "k must be")


def test_single_tokens(small_probe):
    _refused(lambda: small_probe.to_single_token(True), ValueError, "got bool")


def test_attribution_position(small_probe):
    _refused(lambda: direct_logit_attribution(small_probe, IDS[:1], 3, position=99), ValueError, "position 99 is outside")
    _refused(lambda: direct_logit_attribution(small_probe, IDS[:1], 3, position=True), TypeError, "got bool")


def test_head_score_arguments(small_probe):
    scores = torch.rand(SMALL.n_layer, SMALL.n_head)
    _refused(lambda: head_scores.rank_heads(scores, top=True), TypeError, "top must be an integer")
    _refused(lambda: head_scores.rank_heads(scores, top=0), ValueError, "top must be")
    _refused(lambda: head_scores.induction_scores(small_probe, n_seqs=0), ValueError, "n_seqs")
    _refused(lambda: head_scores.induction_scores(small_probe, half_len=True), TypeError, "half_len")


def test_layer_checks_share_one_rule(small_probe):
    _, cache = small_probe.run_with_cache(IDS, names=["blocks.0.hook_resid_pre"])
    for call in (lambda: steer(small_probe, 3, torch.ones(SMALL.n_embd), 1.0).__enter__(),
                 lambda: steer(small_probe, True, torch.ones(SMALL.n_embd), 1.0).__enter__(),
                 lambda: cache.head_results(3),
                 lambda: cache.accumulated_resid(layer=4)):
        _refused(call, IndexError, r"layer")


def test_validate_helpers():
    from gpt2probe import validate

    for bad in (2.0, "3", None, True, [1]):
        _refused(lambda bad=bad: validate.integer("k", bad), TypeError, "k must be an integer")
    assert validate.integer("k", torch.tensor(3).item()) == 3
    _refused(lambda: validate.integer("k", 0, minimum=1, maximum=5), ValueError, "between 1 and 5, got 0")
    for bad in ("1", None, True):
        _refused(lambda bad=bad: validate.finite_number("alpha", bad), TypeError, "alpha must be a number")
    _refused(lambda: validate.finite_number("alpha", float("nan")), ValueError, "finite")
    _refused(lambda: validate.finite_tensor("v", torch.ones(3, dtype=torch.long)), TypeError, "floating-point")
    _refused(lambda: validate.index_list("positions", "0"), TypeError, "list of integers")
    _refused(lambda: validate.index_list("positions", [0, 1.5]), TypeError, r"positions\[1\]")
    assert validate.index_list("positions", 2) == [2] and validate.index_list("p", torch.tensor([1, -1])) == [1, -1]
