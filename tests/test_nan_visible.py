"""NaN is not zero (issue 19): a non-finite weight, activation or KL is an error naming where, never "unchanged".

``sum(v > 0 for v in changes)`` counts a NaN as unchanged, and ``max``/``argmax``/``topk``
over NaN pick arbitrarily; each place in the package that summarises numbers which may be
NaN is tested here.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import gpt2probe
from gpt2probe.diffing import compare, weight_changes
from gpt2probe.errors import InvalidArgumentError, NonFiniteError

from models import SMALL, build_gpt2, random_ids


@pytest.fixture(scope="module")
def base():
    return gpt2probe.load(build_gpt2(SMALL), device="cpu")


@pytest.fixture(scope="module")
def ids():
    return random_ids(SMALL, batch=2, pos=7, seed=5)


def _copy_with(probe, edit):
    model = copy.deepcopy(probe.model)
    with torch.no_grad():
        edit(model)
    return gpt2probe.load(model, device="cpu")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_weight_in_the_tuned_model_is_named_not_counted_as_unchanged(base, ids, value):
    tuned = _copy_with(base, lambda m: m.transformer.h[0].mlp.c_fc.weight.view(-1).__setitem__(4, value))
    with pytest.raises(NonFiniteError, match="the tuned model's blocks.0.mlp weights hold 1 NaN or infinite"):
        compare(base, tuned, ids, head_scores=False, patching=False)
    with pytest.raises(NonFiniteError, match="blocks.0.mlp"):
        weight_changes(base, tuned)
    with pytest.raises(NonFiniteError, match="the base model's blocks.0.mlp"):
        weight_changes(tuned, base)
    assert issubclass(NonFiniteError, InvalidArgumentError) and issubclass(NonFiniteError, ValueError)


def test_finite_weights_whose_sum_overflows_are_not_called_non_finite(base):
    # The finiteness check sums each tensor first; a float32 sum of huge finite weights is inf,
    # which must send it to the exact count rather than to an error.
    huge = torch.finfo(torch.float32).max / 2
    tuned = _copy_with(base, lambda m: m.transformer.h[0].mlp.c_fc.weight.view(-1)[:4].fill_(huge))
    assert math.isinf(float(tuned.model.transformer.h[0].mlp.c_fc.weight.detach().sum()))
    changes = weight_changes(base, tuned)
    assert changes["blocks.0.mlp"] > 0 and math.isfinite(changes["blocks.0.mlp"])


def test_a_nan_activation_is_named(base, ids):
    tuned = _copy_with(base, lambda m: m.transformer.h[1].mlp.c_proj.bias.add_(0.1))

    def poison(x, hook):
        x = x.clone()
        x[1, 3, 0] = float("nan")
        return x

    with tuned.hooks({"blocks.1.hook_resid_post": poison}):
        with pytest.raises(NonFiniteError, match="tuned model's blocks.1.hook_resid_post holds NaN .* prompt 1 at "
                                                 "position 3"):
            compare(base, tuned, ids, head_scores=False, patching=False)
    diff = compare(base, tuned, ids, head_scores=False, patching=False)  # without the hook: finite, and counted
    assert diff.changed_components() == ["blocks.1.mlp"]
    assert "1 of" in repr(diff)


def _nan_logits_at(position: int | slice):
    def poison(x, hook):
        x = x.clone()
        x[:, position] = float("nan")
        return x

    return {"ln_final.hook_normalized": poison}


def test_next_token_generate_and_test_prompt_refuse_nan_logits(base, ids):
    from gpt2probe.generation import generate, next_token

    with base.hooks(_nan_logits_at(-1)):
        with pytest.raises(NonFiniteError, match="next-token logits"):
            next_token(base, ids, k=3)  # topk over NaN would list arbitrary tokens
        with pytest.raises(NonFiniteError, match="logits of new token 0"):
            generate(base, ids, 2, greedy=True)  # argmax over NaN picks arbitrarily
        with pytest.raises(NonFiniteError, match="logits of new token 0"):
            generate(base, ids, 2, seed=1)  # sampling: torch's raw "probability tensor contains nan" otherwise
    assert next_token(base, ids, k=3).ids.shape == (2, 3)  # the hook is gone: finite again


def test_test_prompt_refuses_nan_logits_instead_of_ranking_the_answer_first(vocab_probe):
    from gpt2probe.prompt_test import prompt_test

    with vocab_probe.hooks(_nan_logits_at(slice(None))):
        with pytest.raises(NonFiniteError, match="logits before the answer"):
            prompt_test(vocab_probe, "The cat sat on the", " mat", print_details=False)


def test_the_head_score_delta_figure_ignores_nan_cells_for_its_colour_bound():
    from gpt2probe.diffing.compare import ModelDiff
    from gpt2probe.report.diff import head_score_deltas

    base = {"induction": torch.tensor([[0.1, float("nan")], [0.2, 0.3]])}
    tuned = {"induction": torch.tensor([[0.5, float("nan")], [0.2, 0.1]])}
    diff = ModelDiff(base_name="a", tuned_name="b", str_tokens=[], weight_changes={}, kl=[], disagreements=[],
                     stream_labels=[], resid_change=torch.zeros(0), head_scores_base=base, head_scores_tuned=tuned)
    fig = head_score_deltas(diff)
    assert fig.data[0].zmax == pytest.approx(0.4) and fig.data[0].zmin == pytest.approx(-0.4)
