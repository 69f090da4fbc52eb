"""A left-padded batch gives, at every real position, what each prompt gives on its own."""

from __future__ import annotations

import pytest
import torch

from gpt2probe import names as N
from gpt2probe.tokens import pad_left

from models import SMALL, assert_close

PROMPTS = [
    "The cat",
    "Hello there gpt-2! How are you doing today?",
    "A third prompt, of middling length",
]
TOL = 1e-4
PER_HEAD_QK = ("hook_attn_scores", "hook_pattern")


def real_part(name: str, tensor: torch.Tensor, row: int, real: slice) -> torch.Tensor:
    """Prompt ``row``'s real positions: ``[pos, ...]``, or the real query x real key block of a pattern."""
    if name.endswith(PER_HEAD_QK):
        return tensor[row, :, real, real]
    return tensor[row, real]


def check_batch_equals_single_runs(probe, batch_inputs, single_inputs, tokens):
    logits, cache = probe.run_with_cache(batch_inputs)
    assert list(cache) == probe.hook_names
    for row, single in enumerate(single_inputs):
        real = tokens.real_positions(row)
        alone_logits, alone = probe.run_with_cache(single)
        assert alone_logits.shape[1] == real.stop - real.start
        assert_close(logits[row, real], alone_logits[0], TOL, f"logits of prompt {row}")
        for name in probe.hook_names:
            assert_close(real_part(name, cache[name], row, real), alone[name][0], TOL, f"{name}, prompt {row}")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_left_padded_strings_equal_single_runs(get_probe, attn):
    probe = get_probe("vocab", attn)
    tokens = probe.to_tokens(PROMPTS)
    lengths = [len(probe.to_str_tokens(p)) for p in PROMPTS]
    assert len(set(lengths)) == 3, "the prompts must have different lengths for padding to matter"
    assert tokens.ids.shape == (3, max(lengths))
    check_batch_equals_single_runs(probe, PROMPTS, PROMPTS, tokens)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_left_padded_token_ids_equal_single_runs(get_probe, attn):
    """The same through :class:`Tokens` built from ids, on the small-vocabulary model."""
    probe = get_probe("small", attn)
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, SMALL.vocab_size, (n,), generator=gen).tolist() for n in (4, 9, 1)]
    tokens = pad_left(seqs, pad_id=SMALL.vocab_size - 1)
    singles = [torch.tensor([s]) for s in seqs]
    check_batch_equals_single_runs(probe, tokens, singles, tokens)


def test_padded_pattern_gives_no_weight_to_pads(vocab_probe):
    tokens = vocab_probe.to_tokens(PROMPTS)
    _, cache = vocab_probe.run_with_cache(tokens, names="blocks.*.attn.hook_pattern")
    pads = tokens.attention_mask == 0
    for layer in range(vocab_probe.cfg.n_layers):
        pattern = cache[N.pattern(layer)]
        for row in range(3):
            real = tokens.real_positions(row)
            assert (pattern[row, :, real][..., pads[row]] == 0).all()
            assert_close(pattern[row, :, real].sum(-1), torch.ones_like(pattern[row, :, real, 0]), 1e-5)


def test_position_ids_start_at_zero_at_each_prompt(vocab_probe):
    tokens = vocab_probe.to_tokens(PROMPTS)
    mask, pos = tokens.attention_mask, tokens.position_ids
    assert pos.shape == mask.shape == tokens.ids.shape
    for row in range(3):
        real = tokens.real_positions(row)
        n = int(tokens.lengths[row])
        assert real.stop == tokens.ids.shape[1] and real.stop - real.start == n
        assert torch.equal(pos[row, real], torch.arange(n))
        assert (mask[row, real] == 1).all() and (mask[row, : real.start] == 0).all()
    assert torch.equal(vocab_probe.position_ids(mask), pos)


def test_batch_last_position_is_each_prompts_last_token(vocab_probe):
    """Left padding puts every prompt's last real token at position -1."""
    logits = vocab_probe(PROMPTS)
    for row, prompt in enumerate(PROMPTS):
        assert_close(logits[row, -1], vocab_probe(prompt)[0, -1], TOL, prompt)
