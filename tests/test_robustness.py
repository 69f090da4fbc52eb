"""Hardening under bad input: arbitrary text, long-running use, malicious prompts, unsafe checkpoints.

Each input must give a correct result or a clear gpt2probe error, never a crash deep inside torch.
"""

from __future__ import annotations

import gc
import json
import os
import resource

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import GPT2Config, GPT2LMHeadModel

import gpt2probe
from gpt2probe import names as N
from gpt2probe.errors import NotGPT2Error, PromptError
from gpt2probe.hooks import count_torch_hooks

# Text of every kind: control characters, emoji and other non-ASCII, whitespace, GPT-2's special token.
TEXT = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from([" ", "\n", "\t", "\x00", "\x1b", "é", "字", "🙂", "<|endoftext|>", "a", "<", "&"]),
             max_size=40).map("".join),
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(text=TEXT)
def test_tokenization_round_trips_or_refuses_clearly(vocab_probe, text):
    str_tokens = vocab_probe.to_str_tokens(text)
    if not text:
        assert str_tokens == []
    try:
        tokens = vocab_probe.to_tokens(text)
    except PromptError as error:
        assert ("empty" in str(error) and not str_tokens) or "n_ctx" in str(error)
        return
    assert tokens.ids.shape == (1, len(str_tokens)) and tokens.attention_mask.all()
    assert vocab_probe.to_string(tokens.ids[0]) == text  # byte-level BPE loses nothing


@SETTINGS
@given(texts=st.lists(TEXT, min_size=1, max_size=3))
def test_capture_path_on_arbitrary_text(vocab_probe, texts):
    try:
        tokens = vocab_probe.to_tokens(texts)
    except PromptError as error:
        assert "empty" in str(error) or "n_ctx" in str(error)
        return
    logits, cache = vocab_probe.run_with_cache(tokens, names=[N.resid_post(0), N.pattern(1)])
    assert torch.isfinite(logits).all()
    assert cache[N.resid_post(0)].shape[:2] == tokens.ids.shape
    pattern = cache[N.pattern(1)]
    real = tokens.attention_mask.bool()
    rows = pattern.sum(-1)[real[:, None, :].expand(-1, pattern.shape[1], -1)]
    torch.testing.assert_close(rows, torch.ones_like(rows))  # real queries attend over a distribution
    assert count_torch_hooks(vocab_probe.model) == 0


def test_endoftext_inside_text_is_the_special_token(vocab_probe):
    """As in Hugging Face: the literal string becomes GPT-2's one special token, not seven pieces."""
    assert vocab_probe.to_str_tokens("a<|endoftext|>b") == ["a", "<|endoftext|>", "b"]
    assert vocab_probe.to_tokens("a<|endoftext|>b").ids[0, 1] == vocab_probe.tokenizer.eos_token_id


def test_prompts_at_and_beyond_the_context(vocab_probe):
    n_ctx = vocab_probe.cfg.n_ctx
    at_limit = " a" * n_ctx
    assert vocab_probe.to_tokens(at_limit).ids.shape[1] == n_ctx
    assert vocab_probe(at_limit).shape[1] == n_ctx
    with pytest.raises(PromptError, match=f"{n_ctx + 1} tokens.*n_ctx={n_ctx}"):
        vocab_probe(at_limit + " a")
    with pytest.raises(PromptError, match="n_ctx"):
        gpt2probe.logit_lens(vocab_probe, ["short", at_limit + " a"])


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc to read resident memory")
def test_a_thousand_captures_and_interventions_leak_nothing(small_probe):
    ids = torch.arange(1, 20)[None]
    names = ["blocks.*.hook_resid_post", N.pattern(1), N.z(2)]

    def round_trip():
        _, cache = small_probe.run_with_cache(ids, names=names)
        small_probe.run_with_hooks(ids, [(N.z(0), lambda z, hook: z * 0), (N.pattern(2), lambda p, hook: p)])
        return cache

    expected = small_probe(ids)
    for _ in range(50):  # warm up allocator caches
        round_trip()
    gc.collect()
    before = rss_bytes()
    for _ in range(1000):
        round_trip()
    gc.collect()
    grown = rss_bytes() - before
    assert count_torch_hooks(small_probe.model) == 0
    assert small_probe.model.config._attn_implementation == "sdpa"
    assert torch.equal(small_probe(ids), expected)
    assert grown < 20 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB over 1,000 rounds"


def test_remote_code_is_never_executed(tmp_path):
    """A checkpoint that asks for custom code gets GPT-2's own class, or a refusal; its code never runs."""
    marker = tmp_path / "executed"
    evil = f"open({str(marker)!r}, 'w').write('pwned')\n"
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, n_positions=8, vocab_size=11))
    for model_type in ("gpt2", "evil_gpt"):
        folder = tmp_path / model_type
        model.save_pretrained(folder)
        (folder / "modeling_evil.py").write_text(evil)
        (folder / "configuration_evil.py").write_text(evil)
        config = json.loads((folder / "config.json").read_text())
        config.update(model_type=model_type, auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                                       "AutoModelForCausalLM": "modeling_evil.EvilModel"})
        (folder / "config.json").write_text(json.dumps(config))
        if model_type == "gpt2":
            probe = gpt2probe.load(folder)
            assert type(probe.model) is GPT2LMHeadModel
        else:
            with pytest.raises(NotGPT2Error, match="evil_gpt"):
                gpt2probe.load(folder)
    assert not marker.exists()
