"""The shipped tiny-english copies in context, through a previous-token head and induction heads.

Tests that would notice a retrained model that stopped copying, with margins inside the issue's
thresholds (issue 20). The sequences are those of the model card and of the issue that asked for
the circuit: ``<|endoftext|>`` + 20 random tokens drawn from the 3,000 commonest in Python's
documentation + the same 20 again. Every number is computed here with plain PyTorch on the logits
(losses) or with gpt2probe's head scores, ablation and patching, whose own tests check them
against TransformerLens and hand-written references.
"""

from __future__ import annotations

import pydoc_data.topics
from collections import Counter

import pytest
import torch

from gpt2probe import head_scores
from gpt2probe.interventions import ablate, attribution_patch, patch

from models import repeated_tokens

HALF = 20
N_SEQS = 16
EOT = 50256


@pytest.fixture(scope="module")
def repeated(tiny_english) -> torch.Tensor:
    counts = Counter(t for text in pydoc_data.topics.topics.values() for t in tiny_english.tokenizer(text).input_ids)
    counts.pop(EOT, None)
    pool = torch.tensor([t for t, _ in counts.most_common(3000)])
    return repeated_tokens(N_SEQS, HALF, seed=1, bos=EOT, pool=pool)


def half_losses(logits: torch.Tensor, ids: torch.Tensor) -> tuple[float, float]:
    """Mean loss on the first half's tokens 2..20 and on the repeated half's tokens 21..40."""
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
    return losses[:, 1:HALF].mean().item(), losses[:, HALF:].mean().item()


@pytest.fixture(scope="module")
def scores(tiny_english, repeated):
    _, cache = tiny_english.run_with_cache(repeated, names=head_scores.PATTERN_NAMES)
    return head_scores.previous_token_scores(cache), head_scores.induction_scores_from_cache(cache, HALF)


def top_head(scores: torch.Tensor) -> tuple[int, int, float]:
    layer, head = divmod(int(scores.argmax()), scores.shape[1])
    return layer, head, scores.max().item()


def test_the_repeated_half_is_predicted_from_the_first(tiny_english, repeated):
    first, again = half_losses(tiny_english(repeated), repeated)
    assert first > 6.0, first  # random tokens are hard to predict the first time
    assert again <= 0.4 * first, (first, again)  # the issue asks for at most half; a margin below it


def test_a_previous_token_head_comes_before_the_induction_head(scores):
    previous, induction = scores
    prev_layer, _, prev_score = top_head(previous)
    ind_layer, _, ind_score = top_head(induction)
    assert prev_score >= 0.5, previous
    assert ind_score >= 0.4, induction
    assert prev_layer < ind_layer, (prev_layer, ind_layer)


def test_ablating_the_induction_head_gives_back_the_copying_advantage(tiny_english, repeated, scores):
    layer, head, _ = top_head(scores[1])
    first, again = half_losses(tiny_english(repeated), repeated)
    assert first - again > 2.0, (first, again)  # an advantage worth giving back
    with ablate(tiny_english, heads=[(layer, head)]):
        _, ablated = half_losses(tiny_english(repeated), repeated)
    assert ablated - again >= 0.5 * (first - again), (first, again, ablated)


def test_exact_patching_and_attribution_patching_agree_on_the_top_heads(tiny_english, repeated):
    """Clean: the sequence repeats; corrupted: its first half is other tokens. Metric: log p(next copy)."""
    clean = repeated[:4, : 1 + HALF + 10]
    other = repeated[4:8, 1 : 1 + HALF]
    corrupted = clean.clone()
    corrupted[:, 1 : 1 + HALF] = other
    answer = repeated[:4, 1 + HALF + 10]

    def metric(logits):
        logprobs = logits[:, -1].float().log_softmax(-1)
        return logprobs[torch.arange(len(answer)), answer].mean()

    exact = patch(tiny_english, clean, corrupted, kind="head", metric=metric)
    estimate = attribution_patch(tiny_english, clean, corrupted, kind="head", metric=metric)
    exact_top = top_head(exact.values.abs())[:2]
    ranked = estimate.values.abs().flatten().argsort(descending=True)[:3].tolist()
    assert exact.clean_metric - exact.corrupted_metric > 2.0, (exact.clean_metric, exact.corrupted_metric)
    assert exact_top[0] * exact.values.shape[1] + exact_top[1] in ranked, (exact.values, estimate.values)
