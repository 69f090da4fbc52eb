"""Head scores against the ground-truth toy model and against loops written straight from each definition.

The hand loops below never use offsets or diagonals: they walk every (prompt, query) pair,
decide from the attention mask and the token ids whether it counts and which key it reads,
and average ``pattern[b, h, q, key]``.
"""

from pathlib import Path

import pytest
import torch

import gpt2probe
from gpt2probe import head_scores as H
from gpt2probe import names as N
from gpt2probe.errors import HookNameError
from gpt2probe.tokens import pad_left
from gpt2probe.toy import repeated_random_tokens

TOY_DIR = Path(gpt2probe.__file__).resolve().parent / "assets" / "toy-induction"


def capture(probe, inputs):
    return probe.run_with_cache(inputs, names=H.PATTERN_NAMES)[1]


def loop_mean(cache, key_for) -> torch.Tensor:
    """``[layer, head]``: mean of ``pattern[b, h, q, key_for(b, q)]`` over the (b, q) where key_for is not None."""
    n_batch, n_pos = cache.tokens.ids.shape
    pairs = [(b, q, key_for(b, q)) for b in range(n_batch) for q in range(n_pos)]
    pairs = [(b, q, k) for b, q, k in pairs if k is not None]
    assert pairs, "the hand loop found nothing to average"
    out = []
    for layer in range(cache.n_layers):
        pattern = cache[N.pattern(layer)]
        out.append([sum(float(pattern[b, h, q, k]) for b, q, k in pairs) / len(pairs) for h in range(pattern.shape[1])])
    return torch.tensor(out)


def is_real(cache, b, q) -> bool:
    return q >= 0 and bool(cache.tokens.attention_mask[b, q])


def first_real(cache, b) -> int:
    return next(q for q in range(cache.tokens.ids.shape[1]) if is_real(cache, b, q))


def previous_key(cache):
    return lambda b, q: q - 1 if is_real(cache, b, q) and is_real(cache, b, q - 1) else None


def first_key(cache):
    return lambda b, q: first_real(cache, b) if is_real(cache, b, q) and q != first_real(cache, b) else None


def self_key(cache):
    return lambda b, q: q if is_real(cache, b, q) and q != first_real(cache, b) else None


def induction_key(cache):
    """The position after the earlier occurrence of the current token (BOS at 0 excluded), if any."""
    ids = cache.tokens.ids.tolist()

    def key(b, q):
        earlier = [j for j in range(1, q) if ids[b][j] == ids[b][q]]
        return earlier[-1] + 1 if earlier else None

    return key


# -- the toy model's known circuit -------------------------------------------------------
def test_previous_token_head_is_found_in_layer_0(toy):
    cache = capture(toy, repeated_random_tokens(4, 9, 64, seed=1))
    scores = H.previous_token_scores(cache)
    assert scores.shape == (2, 4)
    assert H.rank_heads(scores, top=1)[0][:2] == (0, 0)
    assert scores[0, 0] > 0.99  # the README's measured ground truth
    torch.testing.assert_close(scores, loop_mean(cache, previous_key(cache)), atol=1e-6, rtol=0)


def test_induction_head_is_found_in_layer_1(toy):
    half_len, n_seqs, seed = 11, 3, 2
    scores = H.induction_scores(toy, half_len=half_len, n_seqs=n_seqs, seed=seed)
    assert scores.shape == (2, 4)
    assert H.rank_heads(scores, top=1)[0][:2] == (1, 0)
    assert scores[1, 0] > 0.99
    # the same sequences (BOS = token 0 for this 64-token model), scored by the hand loop
    cache = capture(toy, repeated_random_tokens(n_seqs, half_len, 64, seed, bos=0))
    torch.testing.assert_close(scores, loop_mean(cache, induction_key(cache)), atol=1e-6, rtol=0)
    torch.testing.assert_close(H.induction_scores_from_cache(cache, half_len), scores, atol=0, rtol=0)


def test_first_token_and_diagonal_scores_match_the_loops(toy):
    cache = capture(toy, repeated_random_tokens(3, 7, 64, seed=5))
    first, diagonal = H.first_token_scores(cache), H.diagonal_scores(cache)
    torch.testing.assert_close(first, loop_mean(cache, first_key(cache)), atol=1e-6, rtol=0)
    torch.testing.assert_close(diagonal, loop_mean(cache, self_key(cache)), atol=1e-6, rtol=0)
    # the induction head rests on BOS throughout the first copy: half of the queries but one
    assert H.rank_heads(first, top=1)[0][:2] == (1, 0)
    assert first[1, 0] == pytest.approx(7 / 14, abs=1e-4)
    assert diagonal[0, 0] < 1e-6 and diagonal[1, 0] < 1e-4  # both circuit heads look elsewhere


def test_all_head_scores_collects_every_score(toy):
    ids = repeated_random_tokens(2, 6, 64, seed=3)
    scores = H.all_head_scores(toy, ids, half_len=5, n_seqs=2, seed=4)
    assert list(scores) == list(H.SCORE_LABELS)
    cache = capture(toy, ids)
    torch.testing.assert_close(scores["previous_token"], H.previous_token_scores(cache), atol=0, rtol=0)
    torch.testing.assert_close(scores["induction"], H.induction_scores(toy, half_len=5, n_seqs=2, seed=4), atol=0, rtol=0)
    assert "induction" not in H.all_head_scores(toy, ids, induction=False)


# -- padding -----------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["toy", "random"])
def test_left_padded_batch_scores_like_separate_runs(model, toy, small_probe):
    """Pad rows and columns never count: per prompt, and pooled with each prompt's query count as weight."""
    probe = toy if model == "toy" else small_probe
    gen = torch.Generator().manual_seed(7)
    lengths = [9, 4, 13, 2]
    prompts = [[0] + torch.randint(1, probe.cfg.d_vocab, (n - 1,), generator=gen).tolist() for n in lengths]
    batch = capture(probe, pad_left(prompts, pad_id=3))
    singles = [capture(probe, torch.tensor(p)) for p in prompts]
    weights = torch.tensor([n - 1 for n in lengths], dtype=torch.float64)  # queries with a previous token
    for score in (H.previous_token_scores, H.first_token_scores, H.diagonal_scores):
        per_prompt = score(batch, per_prompt=True)
        assert per_prompt.shape == (len(prompts), probe.cfg.n_layers, probe.cfg.n_heads)
        for i, single in enumerate(singles):
            torch.testing.assert_close(per_prompt[i], score(single), atol=1e-5, rtol=0)
        pooled = torch.einsum("b,blh->lh", weights, torch.stack([score(s) for s in singles]).double()) / weights.sum()
        torch.testing.assert_close(score(batch), pooled.float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(H.previous_token_scores(batch), loop_mean(batch, previous_key(batch)), atol=1e-6, rtol=0)
    torch.testing.assert_close(H.first_token_scores(batch), loop_mean(batch, first_key(batch)), atol=1e-6, rtol=0)


def test_one_token_prompts_have_no_score(toy):
    batch = capture(toy, pad_left([[0, 5, 6], [0]], pad_id=0))
    assert torch.isnan(H.diagonal_scores(batch, per_prompt=True)[1]).all()
    single = capture(toy, torch.tensor([0]))
    with pytest.raises(ValueError, match="single real token"):
        H.previous_token_scores(single)


# -- models with GPT-2's vocabulary ------------------------------------------------------
def test_induction_scores_on_a_gpt2_vocabulary_model(vocab_probe):
    scores = H.induction_scores(vocab_probe, n_seqs=2)  # default half_len: the longest that fits n_ctx=29
    assert scores.shape == (vocab_probe.cfg.n_layers, vocab_probe.cfg.n_heads)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    with pytest.raises(ValueError, match="half_len must be in \\[1, 14\\]"):
        H.induction_scores(vocab_probe, half_len=15)
    with pytest.raises(ValueError, match="vocab must be in"):
        H.induction_scores(vocab_probe, vocab=60000)


# -- errors and ranking ------------------------------------------------------------------
def test_missing_patterns_name_the_hook_to_capture(toy):
    ids = repeated_random_tokens(1, 4, 64, seed=0)
    _, no_patterns = toy.run_with_cache(ids, names="blocks.*.hook_resid_post")
    with pytest.raises(HookNameError, match=r"blocks\.0\.attn\.hook_pattern.*names='blocks\.\*\.attn\.hook_pattern'"):
        H.previous_token_scores(no_patterns)
    _, layer_0_only = toy.run_with_cache(ids, names=[N.pattern(0)])
    with pytest.raises(HookNameError, match=r"lacks 'blocks\.1\.attn\.hook_pattern'"):
        H.diagonal_scores(layer_0_only)


def test_induction_from_cache_refuses_unrepeated_tokens(toy):
    cache = capture(toy, torch.arange(12))
    with pytest.raises(ValueError, match="repeated twice"):
        H.induction_scores_from_cache(cache, 5)
    with pytest.raises(ValueError, match="half_len must be in"):
        H.induction_scores_from_cache(cache, 7)


def test_rank_heads_orders_and_skips_nan():
    scores = torch.tensor([[0.2, float("nan"), 0.9], [0.9, 0.1, 0.5]])
    assert H.rank_heads(scores, top=3) == [(0, 2, pytest.approx(0.9)), (1, 0, pytest.approx(0.9)), (1, 2, 0.5)]
    assert len(H.rank_heads(scores, top=None)) == 5
    assert H.rank_heads(scores, top=100)[-1][:2] == (1, 1)
    with pytest.raises((ValueError, TypeError)):  # TypeError from the jaxtyping check this test run turns on
        H.rank_heads(scores.flatten())
    with pytest.raises(ValueError, match="top must be"):
        H.rank_heads(scores, top=0)
