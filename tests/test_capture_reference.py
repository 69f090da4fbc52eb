"""Every captured activation equals TransformerLens's on the same weights and token ids.

The reference is TransformerLens 4's ``TransformerBridge`` booted from the same
``save_pretrained`` directory; logits are also checked against Hugging Face's own forward
pass, and attention patterns against Hugging Face's eager ``output_attentions=True``.
Each check runs on both checkpoints under both ``sdpa`` and ``eager`` attention.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import torch
from transformers import GPT2LMHeadModel

from gpt2probe import names as N

from models import SMALL, assert_close, random_ids

TOL = 1e-4

@functools.cache
def hf_reference(directory: Path, attn: str) -> GPT2LMHeadModel:
    """A plain Hugging Face model from the same directory, loaded independently of gpt2probe."""
    return GPT2LMHeadModel.from_pretrained(directory, dtype=torch.float32, attn_implementation=attn).eval()


@pytest.fixture
def hf_model(which, attn, checkpoint_dirs) -> GPT2LMHeadModel:
    return hf_reference(checkpoint_dirs[which], attn)


@pytest.fixture
def hf_eager(which, checkpoint_dirs) -> GPT2LMHeadModel:
    return hf_reference(checkpoint_dirs[which], "eager")


def shapes(spec):
    """A batch of two prompts (no padding) and one prompt filling the whole context."""
    return [(2, 13), (1, spec.n_positions)]


def test_probe_uses_the_requested_attention(probe, attn):
    assert probe.model.config._attn_implementation == attn


def test_every_hook_matches_transformer_lens(probe, bridge, spec):
    for batch, pos in shapes(spec):
        ids = random_ids(spec, batch, pos, seed=batch * 100 + pos)
        logits, cache = probe.run_with_cache(ids)
        tl_logits, tl_cache = bridge.run_with_cache(ids)

        assert list(cache) == probe.hook_names, "names=None must capture every hook, in forward order"
        assert len(probe.hook_names) == 4 + 17 * spec.n_layer
        for name in probe.hook_names:
            assert name in tl_cache, f"{name} is not a TransformerLens hook name"
            # attn_scores: TransformerLens fills masked entries with finfo(float32).min; so must we.
            assert_close(cache[name], tl_cache[name], TOL, f"{name} [{batch}x{pos}]")
        assert_close(logits, tl_logits, TOL, "logits")


def test_masked_scores_are_float32_min_as_in_transformer_lens(probe, bridge, spec):
    ids = random_ids(spec, 2, 9, seed=5)
    _, cache = probe.run_with_cache(ids, names=re.compile(r"blocks\.0\.attn\.hook_(attn_scores|pattern)"))
    _, tl_cache = bridge.run_with_cache(ids)
    upper = torch.triu(torch.ones(9, 9, dtype=torch.bool), diagonal=1)
    scores = cache[N.attn_scores(0)]
    assert torch.equal(scores[..., upper], tl_cache[N.attn_scores(0)][..., upper])
    assert (scores[..., upper] == torch.finfo(torch.float32).min).all()
    assert (cache[N.pattern(0)][..., upper] == 0).all()


def test_logits_match_hf_and_transformer_lens(probe, bridge, hf_model, spec):
    for batch, pos in shapes(spec):
        ids = random_ids(spec, batch, pos, seed=7 + pos)
        logits = probe(ids)
        with torch.no_grad():
            hf = hf_model(ids).logits
            tl = bridge(ids)
        assert logits.shape == (batch, pos, spec.vocab_size)
        assert_close(logits, hf, 1e-5, "probe vs HF")
        assert_close(logits, tl, TOL, "probe vs TransformerLens")
        # Capturing (which reroutes attention while patterns are hooked) leaves the logits alone.
        captured, _ = probe.run_with_cache(ids)
        assert_close(captured, hf, 1e-5, "run_with_cache vs HF")


def test_patterns_match_hf_eager_output_attentions(probe, hf_eager, spec):
    ids = random_ids(spec, 2, 11, seed=3)
    _, cache = probe.run_with_cache(ids, names="blocks.*.attn.hook_pattern")
    with torch.no_grad():
        attentions = hf_eager(ids, output_attentions=True).attentions
    assert len(attentions) == spec.n_layer
    for layer, reference in enumerate(attentions):
        pattern = cache[N.pattern(layer)]
        assert pattern.shape == (2, spec.n_head, 11, 11)
        assert_close(pattern, reference, 1e-6, f"pattern {layer}")
        assert_close(pattern.sum(-1), torch.ones(2, spec.n_head, 11), 1e-5, "rows sum to 1")


def test_pattern_capture_restores_attention_implementation(probe, attn, spec):
    ids = random_ids(spec, 1, 8, seed=1)
    assert probe.model.config._attn_implementation == attn
    seen = []
    probe.run_with_hooks(ids, [(N.pattern(1), lambda t, hook: seen.append(hook.name))])
    assert seen == [N.pattern(1)]
    assert probe.model.config._attn_implementation == attn
    probe.run_with_cache(ids, names=[N.pattern(0), N.attn_scores(1)])
    assert probe.model.config._attn_implementation == attn

    def boom(tensor, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        probe.run_with_hooks(ids, {N.pattern(0): boom})
    assert probe.model.config._attn_implementation == attn


@pytest.fixture(scope="module")
def full(small_probe):
    """Everything captured on one batch, to compare selections with."""
    ids = random_ids(SMALL, 2, 10, seed=9)
    return ids, small_probe.run_with_cache(ids)[1]


class TestNameSelection:
    """``names=`` captures exactly what is asked, in forward order, and the values are unchanged."""

    def check(self, probe, full, selection, expected):
        ids, everything = full
        _, cache = probe.run_with_cache(ids, names=selection)
        assert list(cache) == expected
        for name in expected:
            # Without a pattern hook the model keeps sdpa: equal up to kernel rounding.
            assert_close(cache[name], everything[name], 1e-5, name)

    def test_list(self, small_probe, full):
        # Given out of order: the cache follows the forward pass.
        self.check(small_probe, full, [N.mlp_out(2), N.EMBED, N.z(1)], [N.EMBED, N.z(1), N.mlp_out(2)])

    def test_single_name(self, small_probe, full):
        self.check(small_probe, full, N.resid_mid(1), [N.resid_mid(1)])

    def test_glob(self, small_probe, full):
        self.check(small_probe, full, "blocks.*.hook_resid_post", [N.resid_post(l) for l in range(3)])

    def test_glob_on_ln(self, small_probe, full):
        expected = [N.ln_scale(l, w) for l in range(3) for w in (1, 2)] + [N.LN_FINAL_SCALE]
        self.check(small_probe, full, "*hook_scale", expected)

    def test_regex(self, small_probe, full):
        expected = [name for l in range(3) for name in (N.q(l), N.k(l))]
        self.check(small_probe, full, re.compile(r"blocks\.\d+\.attn\.hook_[qk]"), expected)

    def test_predicate(self, small_probe, full):
        expected = [N.pattern(0), N.pattern(1), N.pattern(2)]
        self.check(small_probe, full, lambda name: name.endswith("hook_pattern"), expected)

    def test_empty_predicate_captures_nothing(self, small_probe, full):
        self.check(small_probe, full, lambda name: False, [])


def test_capture_options(small_probe):
    ids = random_ids(SMALL, 2, 6, seed=4)
    _, base = small_probe.run_with_cache(ids, names=[N.resid_post(0), N.LN_FINAL_NORMALIZED])
    _, cache = small_probe.run_with_cache(ids, names=[N.resid_post(0)], dtype=torch.float64, device="cpu")
    assert cache[N.resid_post(0)].dtype == torch.float64
    assert_close(cache[N.resid_post(0)], base[N.resid_post(0)], 1e-6)
    assert not base[N.resid_post(0)].requires_grad
    # unembed=False returns ln_f's output: the normalized final stream times ln_f's weight plus bias.
    hidden, _ = small_probe.run_with_cache(ids, names=[], unembed=False)
    ln_f = small_probe.model.transformer.ln_f
    assert_close(hidden, base[N.LN_FINAL_NORMALIZED] * ln_f.weight + ln_f.bias, 1e-5)
    assert_close(hidden @ small_probe.W_U + small_probe.b_U, small_probe(ids), 1e-5)

