"""Every bad input gets its own error type and a message that names the problem."""

from __future__ import annotations

import re
import time

import pytest
import torch

import gpt2probe
from gpt2probe import (
    GPT2ProbeError,
    HookNameError,
    LayerIndexError,
    NotGPT2Error,
    PromptError,
    UnsafeCheckpointError,
    WeightsUnavailableError,
)
from gpt2probe import names as N

from models import SMALL, VOCAB, assert_close, build_gpt2, random_ids, save_gpt2, save_pickle_only

IDS = random_ids(SMALL, 1, 6, seed=0)


# -- hook names ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        lambda p, name: p.run_with_cache(IDS, names=[name]),
        lambda p, name: p.run_with_cache(IDS, names=name),
        lambda p, name: p.run_with_hooks(IDS, {name: lambda t, h: None}),
    ],
    ids=["names-list", "names-str", "run_with_hooks"],
)
def test_unknown_hook_name_lists_nearest_valid_names(small_probe, call):
    with pytest.raises(HookNameError) as info:
        call(small_probe, "blocks.1.hook_resid_psot")
    message = str(info.value)
    assert "'blocks.1.hook_resid_psot'" in message
    assert "nearest valid names" in message and "'blocks.1.hook_resid_post'" in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, GPT2ProbeError)


def test_hook_name_with_layer_out_of_range_names_valid_blocks(small_probe):
    with pytest.raises(HookNameError) as info:
        small_probe.run_with_cache(IDS, names=["blocks.7.hook_resid_pre"])
    message = str(info.value)
    assert "blocks.7.hook_resid_pre" in message and "blocks 0..2" in message


def test_glob_and_regex_matching_nothing(small_probe):
    with pytest.raises(HookNameError, match=re.escape("blocks.*.hook_resid_postt")):
        small_probe.run_with_cache(IDS, names="blocks.*.hook_resid_postt")
    with pytest.raises(HookNameError, match="matches no hook name"):
        small_probe.run_with_cache(IDS, names=re.compile(r"nothing\..*"))


def test_cache_lookup_of_uncaptured_and_unknown_names(small_probe):
    _, cache = small_probe.run_with_cache(IDS, names=[N.resid_pre(0)])
    with pytest.raises(HookNameError, match=r"'blocks\.0\.hook_resid_post' was not captured"):
        cache[N.resid_post(0)]
    with pytest.raises(HookNameError, match="nearest valid names: 'blocks.0.hook_resid_pre'"):
        cache["blocks.0.hook_resid_prex"]


def test_hook_function_that_is_not_callable(small_probe):
    with pytest.raises(TypeError, match="hook_embed"):
        with small_probe.hooks({N.EMBED: "not a function"}):
            pass


# -- layers ----------------------------------------------------------------------------
def test_cache_layer_out_of_range(small_probe):
    _, cache = small_probe.run_with_cache(IDS)
    with pytest.raises(LayerIndexError, match=r"layer 99 .*0\.\.3"):
        cache.accumulated_resid(layer=99)
    with pytest.raises(LayerIndexError, match="layer -2"):
        cache.decompose_resid(layer=-2)
    with pytest.raises(LayerIndexError, match=r"layer 3 .*0\.\.2"):
        cache.head_results(3)
    with pytest.raises(IndexError):  # LayerIndexError is an IndexError
        cache.stack_head_results(layer=4)


# -- prompts ---------------------------------------------------------------------------
def test_empty_prompt(vocab_probe):
    with pytest.raises(PromptError, match="empty"):
        vocab_probe("")
    with pytest.raises(PromptError, match="prompt 1 is empty"):
        vocab_probe.to_tokens(["fine", ""])
    with pytest.raises(PromptError, match="no prompts"):
        vocab_probe.to_tokens([])
    with pytest.raises(PromptError, match="empty"):
        vocab_probe(torch.zeros(1, 0, dtype=torch.long))


def test_prompt_longer_than_context(vocab_probe):
    text = " word" * (VOCAB.n_positions + 1)
    with pytest.raises(PromptError) as info:
        vocab_probe.run_with_cache(text)
    message = str(info.value)
    assert f"{VOCAB.n_positions + 1} tokens" in message and f"n_ctx={VOCAB.n_positions}" in message
    vocab_probe(" word" * VOCAB.n_positions)  # exactly n_ctx is fine
    with pytest.raises(PromptError, match=f"n_ctx={VOCAB.n_positions}"):
        vocab_probe(torch.zeros(1, VOCAB.n_positions + 1, dtype=torch.long))


@pytest.mark.parametrize("bad", [SMALL.vocab_size, 5000, -1])
def test_token_ids_outside_the_vocabulary(small_probe, bad):
    ids = IDS.clone()
    ids[0, 2] = bad
    with pytest.raises(PromptError, match=rf"\[0, {SMALL.vocab_size}\)"):
        small_probe(ids)
    with pytest.raises(PromptError):
        small_probe.run_with_cache(ids)


def test_string_prompt_on_a_small_vocabulary_model(small_probe):
    with pytest.raises(PromptError, match="vocabulary has only 101 tokens"):
        small_probe("Hello there")


def test_malformed_token_tensors(small_probe):
    with pytest.raises(PromptError, match="integer"):
        small_probe(IDS.float())
    with pytest.raises(PromptError, match=r"\(1, 1, 6\)"):
        small_probe(IDS[None])


def test_single_token_errors(vocab_probe):
    with pytest.raises(PromptError, match="not one"):
        vocab_probe.to_single_token(" Paris is")
    with pytest.raises(PromptError, match="outside the vocabulary"):
        vocab_probe.to_single_token(VOCAB.vocab_size)


# -- loading ---------------------------------------------------------------------------
def save_tiny_foreign(kind: str, directory):
    if kind == "bert":
        from transformers import BertConfig, BertModel

        config = BertConfig(vocab_size=50, hidden_size=12, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=16, max_position_embeddings=16)
        BertModel(config).save_pretrained(directory)
        return "bert"
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    LlamaForCausalLM(config).save_pretrained(directory)
    return "llama"


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_non_gpt2_checkpoint_directory(tmp_path, kind):
    model_type = save_tiny_foreign(kind, tmp_path)
    with pytest.raises(NotGPT2Error, match=f"model_type '{model_type}'"):
        gpt2probe.load(tmp_path, device="cpu")


def test_non_gpt2_model_objects():
    from transformers import BertConfig, BertModel, GPT2Model

    with pytest.raises(NotGPT2Error, match=r"GPT2Model.*LM head"):
        gpt2probe.load(GPT2Model(SMALL.config()), device="cpu")
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=12, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16))
    with pytest.raises(NotGPT2Error, match="BertModel.*'bert'"):
        gpt2probe.load(bert, device="cpu")


def test_model_object_is_accepted():
    model = build_gpt2(SMALL)
    probe = gpt2probe.load(model, device="cpu")
    assert probe.model is model
    with torch.no_grad():
        assert_close(probe(IDS), model(IDS).logits, 0)


def test_missing_hub_weights_offline_fail_fast(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HOME", str(home))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        gpt2probe.load("gpt2", device="cpu")
    assert time.monotonic() - start < 10, "offline loading must fail fast, not retry"
    message = str(info.value)
    assert "'gpt2'" in message and "offline" in message
    assert "`hf download gpt2`" in message and "huggingface-cli" not in message and "save_pretrained" in message
    assert f"HF_HOME={home}" in message
    assert "gpt2probe.load('tiny-english')" in message and "gpt2probe.load('toy-induction')" in message
    assert isinstance(info.value, OSError)


def test_nonexistent_directory(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(WeightsUnavailableError, match="no such directory") as info:
        gpt2probe.load(missing, device="cpu")
    assert str(missing) in str(info.value)
    with pytest.raises(WeightsUnavailableError, match="no such directory"):
        gpt2probe.load(str(missing), device="cpu")


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsUnavailableError, match="no config.json"):
        gpt2probe.load(tmp_path, device="cpu")


def test_file_instead_of_directory(small_dir):
    with pytest.raises(WeightsUnavailableError, match="not a directory"):
        gpt2probe.load(small_dir / "config.json", device="cpu")


def test_config_without_weights(tmp_path):
    SMALL.config().save_pretrained(tmp_path)
    with pytest.raises(WeightsUnavailableError, match="no weights.*model.safetensors"):
        gpt2probe.load(tmp_path, device="cpu")


def test_pickle_only_checkpoint_needs_allow_pickle(tmp_path, small_probe):
    save_pickle_only(SMALL, tmp_path)
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle=True") as info:
        gpt2probe.load(tmp_path, device="cpu")
    assert "pytorch_model.bin" in str(info.value)
    probe = gpt2probe.load(tmp_path, device="cpu", allow_pickle=True)
    # The same seeded weights as the session's safetensors checkpoint: the same logits.
    assert_close(probe(IDS), small_probe(IDS), 0)
    _, cache = probe.run_with_cache(IDS, names=[N.pattern(0)])
    assert cache[N.pattern(0)].shape == (1, SMALL.n_head, 6, 6)


def test_safetensors_preferred_when_both_present(tmp_path, small_probe):
    save_gpt2(SMALL, tmp_path)
    torch.save({"not": torch.zeros(1)}, tmp_path / "pytorch_model.bin")  # never read
    probe = gpt2probe.load(tmp_path, device="cpu")
    assert_close(probe(IDS), small_probe(IDS), 0)


def test_unknown_dtype_name(small_dir):
    with pytest.raises(ValueError, match="float33.*float32"):
        gpt2probe.load(small_dir, device="cpu", dtype="float33")


def test_the_test_run_is_offline():
    """conftest switches offline mode on before huggingface_hub reads it: nothing here can download."""
    import huggingface_hub.constants as hub

    assert hub.HF_HUB_OFFLINE is True
